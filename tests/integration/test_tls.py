"""TLS end to end: a real `farmhand manager --ssl-certfile/--ssl-keyfile` process with a
certificate from a private CA made at test time; the CLI and a real worker reach it
only when they are given that CA."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from farmhand.localfarm import Child, free_port

ADMIN_TOKEN = "fh_api_tls_admin_token_for_this_test_only"
RUNNER_TOKEN = "fh_reg_tls_runner_token_for_this_test_only"


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path) -> Pki:
    """A CA, and a server certificate for 127.0.0.1 and localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("farmhand test CA"))
        .issuer_name(_name("farmhand test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any farmhand settings of the person running the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARMHAND_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class TlsManager:
    url: str
    pki: Pki
    child: Child


@pytest.fixture
def tls_manager(tmp_path: Path) -> Iterator[TlsManager]:
    pki = make_pki(tmp_path)
    port = free_port()
    args = [
        sys.executable, "-m", "farmhand", "manager", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(tmp_path / "data"),
        "--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(pki.key),
    ]  # fmt: skip
    env = clean_env(tmp_path, FARMHAND_ADMIN_TOKEN=ADMIN_TOKEN, FARMHAND_RUNNER_TOKEN=RUNNER_TOKEN)
    child = Child("manager", args, tmp_path / "logs" / "manager.log", env).start()
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    httpx.get(
                        url + "/healthz",
                        verify=ssl.create_default_context(cafile=pki.ca),
                        timeout=2,
                    ).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            assert child.running, child.tail()
            assert time.monotonic() < deadline, child.tail()
            time.sleep(0.2)
        yield TlsManager(url, pki, child)
    finally:
        child.stop()


def farmhand(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farmhand", *args],
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_trusts_the_manager_through_its_ca_and_only_then(
    tls_manager: TlsManager, tmp_path: Path
) -> None:
    url, ca = tls_manager.url, str(tls_manager.pki.ca)
    jobs = ("jobs", "--url", url, "--token", ADMIN_TOKEN)

    refused = farmhand(tmp_path, *jobs)
    assert refused.returncode == 1, refused
    assert "not trusted" in refused.stderr and "--ca-bundle" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout

    by_env = farmhand(tmp_path, *jobs, FARMHAND_CA_BUNDLE=ca)
    assert by_env.returncode == 0, by_env.stderr
    by_flag = farmhand(tmp_path, "--ca-bundle", ca, *jobs)
    assert by_flag.returncode == 0, by_flag.stderr
    config = tmp_path / "farmhand.toml"
    config.write_text(f'url = "{url}"\ntoken = "{ADMIN_TOKEN}"\nca_bundle = "{ca}"\n')
    by_file = farmhand(tmp_path, "jobs", FARMHAND_CONFIG=str(config))
    assert by_file.returncode == 0, by_file.stderr

    missing = farmhand(tmp_path, *jobs, FARMHAND_CA_BUNDLE=str(tmp_path / "nope.pem"))
    assert missing.returncode == 1
    assert "nope.pem is not a file" in missing.stderr
    assert "Traceback" not in missing.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    unusable = farmhand(tmp_path, *jobs, FARMHAND_CA_BUNDLE=str(junk))
    assert unusable.returncode == 1
    assert "cannot use the CA bundle" in unusable.stderr
    assert "Traceback" not in unusable.stderr


def test_plain_http_is_not_served(tls_manager: TlsManager) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(tls_manager.url.replace("https:", "http:") + "/healthz", timeout=5)


@pytest.mark.blender
def test_a_real_worker_registers_over_tls(tls_manager: TlsManager, tmp_path: Path) -> None:
    # Without the CA it refuses to talk, says why, and keeps trying (a fixed certificate
    # or CA later needs no restart).
    untrusting_args = [
        sys.executable, "-m", "farmhand", "worker", "--manager", tls_manager.url,
        "--token", RUNNER_TOKEN, "--name", "no-ca", "--work-dir", str(tmp_path / "n"),
        "--blender", "/usr/bin/blender",
    ]  # fmt: skip
    log = tmp_path / "logs" / "no-ca.log"
    untrusting = Child("no-ca", untrusting_args, log, clean_env(tmp_path)).start()
    try:
        deadline = time.monotonic() + 60
        while "is not trusted" not in log.read_text(errors="replace"):
            assert untrusting.running, untrusting.tail()
            assert time.monotonic() < deadline, untrusting.tail()
            time.sleep(0.3)
        assert "--ca-bundle" in log.read_text(errors="replace")
        assert "Traceback" not in log.read_text(errors="replace")
    finally:
        untrusting.stop()
    worker_args = [
        sys.executable, "-m", "farmhand", "worker", "--manager", tls_manager.url,
        "--token", RUNNER_TOKEN, "--name", "tls-worker", "--work-dir", str(tmp_path / "w"),
        "--heartbeat-interval", "1", "--poll-wait", "1", "--blender", "/usr/bin/blender",
        "--ca-bundle", str(tls_manager.pki.ca),
    ]  # fmt: skip
    worker = Child("worker", worker_args, tmp_path / "logs" / "worker.log", clean_env(tmp_path))
    worker.start()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            runners = httpx.get(
                tls_manager.url + "/api/admin/runners",
                headers=admin,
                verify=ssl.create_default_context(cafile=tls_manager.pki.ca),
                timeout=5,
            ).json()
            assert not [r for r in runners if r["name"] == "no-ca"]
            if [r for r in runners if r["name"] == "tls-worker" and r["status"] != "offline"]:
                break
            assert worker.running, worker.tail()
            assert time.monotonic() < deadline, worker.tail() + tls_manager.child.tail()
            time.sleep(0.5)
    finally:
        worker.stop()


def test_the_manager_refuses_a_key_that_does_not_fit(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    answer = farmhand(
        tmp_path,
        "manager",
        "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
        "--ssl-certfile", str(pki.cert), "--ssl-keyfile", str(other.key),
    )  # fmt: skip
    assert answer.returncode == 2, answer
    assert "cannot use" in answer.stderr
    assert "Traceback" not in answer.stderr


def start_plain_manager(tmp_path: Path, name: str, *extra: str) -> tuple[Child, str]:
    port = free_port()
    args = [
        sys.executable, "-m", "farmhand", "manager", "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(tmp_path / name), *extra,
    ]  # fmt: skip
    env = clean_env(tmp_path, FARMHAND_ADMIN_TOKEN=ADMIN_TOKEN, FARMHAND_RUNNER_TOKEN=RUNNER_TOKEN)
    child = Child(name, args, tmp_path / "logs" / f"{name}.log", env).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return child, url
        except httpx.HTTPError:
            pass
        assert child.running and time.monotonic() < deadline, child.tail()
        time.sleep(0.2)


def test_proxy_headers_are_believed_only_when_asked(tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy the manager must know the browser used https (the
    worker command it prints, OAuth redirects); reached directly, it must not believe a
    client that claims so."""
    forwarded = {
        "Authorization": f"Bearer {ADMIN_TOKEN}",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
        "Host": "farm.example",
    }
    seen = {}
    for name, extra in (("direct", ()), ("proxied", ("--proxy-headers",))):
        child, url = start_plain_manager(tmp_path, name, *extra)
        try:
            answer = httpx.post(url + "/api/admin/runner-tokens", headers=forwarded, json={})
            assert answer.status_code == 201, answer.text
            seen[name] = answer.json()["command"]
        finally:
            child.stop()
    assert "--manager http://farm.example" in seen["direct"]
    assert "--manager https://farm.example" in seen["proxied"]
