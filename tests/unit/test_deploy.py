"""The container and Kubernetes files in deploy/ agree with the code they run.

No image is built here (that needs a Docker engine). Instead every `farmhand` command
line in the Dockerfile, the compose file and the manifests is parsed by the real CLI,
every `FARMHAND_*` variable they set must be one the code reads, probes must name routes
of the manager's app, ports must agree, and the images must be the ones docs/DEPLOY.md
builds. A renamed option, variable, route or target breaks one of these tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from fastapi.testclient import TestClient

from farmhand import __version__
from farmhand.cli.app import app
from farmhand.client.client import DEFAULT_TIMEOUT
from farmhand.manager.settings import ManagerSettings
from farmhand.worker.agent import WorkerSettings
from farmhand.worker.cache import parse_size

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
SRC = ROOT / "src" / "farmhand"
PLACEHOLDER = "placeholder-from-a-secret"


# ------------------------------------------------------------------ the real CLI


def _click_error(name: str) -> type[Exception]:
    """One of click's exception classes as the CLI raises them (typer may use its own
    copy of click, so not `click.<name>`)."""
    module = sys.modules[typer.BadParameter.__mro__[1].__module__]
    error: type[Exception] = getattr(module, name)
    return error


ClickException = _click_error("ClickException")
BadParameter = typer.BadParameter


def parse_farmhand(args: list[str], env: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """Parse `farmhand ARGS` with the real CLI, as it would run with `env`: the
    sub-command's name and its parameters. Unknown options, bad values (types, ranges)
    and bad environment values raise click's usage errors."""
    command = typer.main.get_command(app)
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("FARMHAND_")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        ctx = command.make_context("farmhand", list(args), resilient_parsing=False)
        path: list[str] = []
        while hasattr(command, "resolve_command"):  # a group: find its sub-command
            protected: list[str] | None = getattr(ctx, "_protected_args", None)
            if protected is None:  # click before 8.2 (typer's own copy of it has no property)
                protected = getattr(ctx, "protected_args")
            name, sub, rest = command.resolve_command(ctx, [*protected, *ctx.args])
            assert name is not None and sub is not None, f"no sub-command in {args}"
            path.append(name)
            command = sub
            ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=False)
        assert not ctx.args, f"farmhand {' '.join(args)}: left over {ctx.args}"
        return " ".join(path), dict(ctx.params)


def option_envvars(*command_path: str) -> set[str]:
    """The environment variables the options of the root group and of this sub-command
    read (their `envvar=`)."""
    root = typer.main.get_command(app)
    command = root
    for name in command_path:
        command = command.commands[name]  # type: ignore[attr-defined]
    names: set[str] = set()
    for each in (root, command):
        for param in each.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


WORKER_CODE = ("worker", "shared", "client", "cli/worker_cmd.py", "cli/config.py", "cli/app.py")
"""What a `farmhand worker` process runs (besides its options)."""


def read_in_source(name: str, within: tuple[str, ...] = ("",)) -> bool:
    """`name` appears as a quoted string in farmhand's code (optionally only in these
    packages or modules): the fallback for variables read with os.environ."""
    pattern = re.compile(rf"""["']{re.escape(name)}["']""")
    for path in SRC.rglob("*.py"):
        if not any(path == SRC / part or SRC / part in path.parents for part in within):
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            return True
    return False


def manager_reads(name: str, value: str) -> bool:
    """`farmhand manager` reads this variable: an option's envvar, a field of
    `ManagerSettings.from_env` (FARMHAND_<FIELD>, names built at run time), or os.environ."""
    if name in option_envvars("manager"):
        return True
    try:
        changed = ManagerSettings.from_env({name: value}) != ManagerSettings.from_env({})
    except (TypeError, ValueError):
        changed = True  # it was read, and the sample value did not fit its type
    return changed or read_in_source(name)


def worker_reads(name: str) -> bool:
    """`farmhand worker` reads this variable: its options' envvars, or the code a worker
    runs (a variable only the manager reads does nothing on a worker)."""
    return name in option_envvars("worker") or read_in_source(name, WORKER_CODE)


# ------------------------------------------------------------------- the Dockerfile


@dataclass
class Stage:
    name: str
    parent: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    expose: list[int] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    user: str | None = None


def dockerfile_stages() -> dict[str, Stage]:
    """The Dockerfile's stages with their instructions (line continuations joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: {line}"
            stage = stages[parts[2]] = Stage(parts[2], parts[0])
            continue
        if stage is None:
            continue
        if keyword in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest)  # exec form only: signals must reach farmhand
            assert isinstance(value, list), f"{keyword} must use the exec form: {line}"
            if keyword == "ENTRYPOINT":
                stage.entrypoint, stage.cmd = value, []  # a new ENTRYPOINT resets CMD
            else:
                stage.cmd = value
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                stage.env[name] = value
        elif keyword == "EXPOSE":
            stage.expose += [int(port.split("/")[0]) for port in rest.split()]
        elif keyword == "VOLUME":
            stage.volumes += json.loads(rest)
        elif keyword == "USER":
            stage.user = rest
    return stages


@dataclass(frozen=True)
class Image:
    """What a Dockerfile target runs, its own and its parents' instructions merged."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    expose: list[int]
    volumes: list[str]
    user: str | None


def image_of(target: str) -> Image:
    stages = dockerfile_stages()
    chain: list[Stage] = []
    name: str | None = target
    while name in stages:
        chain.append(stages[name])
        name = stages[name].parent
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    expose: list[int] = []
    volumes: list[str] = []
    user: str | None = None
    for stage in reversed(chain):
        if stage.entrypoint is not None:
            entrypoint, cmd = stage.entrypoint, []
        if stage.cmd is not None:
            cmd = stage.cmd
        env.update(stage.env)
        expose += stage.expose
        volumes += stage.volumes
        user = stage.user or user
    return Image(entrypoint, cmd, env, expose, volumes, user)


def farmhand_args(entrypoint: list[str], cmd: list[str]) -> list[str]:
    """The arguments farmhand gets from an entrypoint and a command (CMD, compose's
    `command`, Kubernetes' `args`)."""
    assert entrypoint[-1] == "farmhand", f"the entrypoint must end in farmhand: {entrypoint}"
    return list(cmd)


# ----------------------------------------------------------- docs/DEPLOY.md's images


def documented_images() -> dict[str, str]:
    """target → image name, from the `docker build … --target T -t IMAGE .` lines of
    docs/DEPLOY.md (the one place that says what to build)."""
    images: dict[str, str] = {}
    for line in DEPLOY_DOC.read_text(encoding="utf-8").splitlines():
        if "docker build" not in line:
            continue
        words = shlex.split(line[line.index("docker build") :])
        if "--target" in words and "-t" in words:
            images[words[words.index("--target") + 1]] = words[words.index("-t") + 1]
    return images


# --------------------------------------------------------------- compose and k8s


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def compose() -> dict[str, Any]:
    (document,) = load_all(COMPOSE)
    return document


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, `${VAR:?…}` interpolations as placeholders."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: re.sub(r"\$\{[^}]*\}", PLACEHOLDER, str(v)) for k, v in raw.items()}


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_all(path):
            yield path, doc


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc.get("kind") == kind]


def pod_containers() -> Iterator[dict[str, Any]]:
    for kind in ("Deployment", "StatefulSet"):
        for obj in k8s_objects(kind):
            if "selector" not in obj["spec"]:
                continue  # a patch (manager-behind-proxy.yaml), not a workload
            yield from obj["spec"]["template"]["spec"]["containers"]


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", PLACEHOLDER)) for e in container.get("env", [])}


def k8s_workload(component: str) -> dict[str, Any]:
    (obj,) = [
        obj
        for kind in ("Deployment", "StatefulSet")
        for obj in k8s_objects(kind)
        if "selector" in obj["spec"]
        and obj["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return obj


def proxy_patch_env() -> dict[str, str]:
    (patch,) = load_all(KUBERNETES / "manager-behind-proxy.yaml")
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    return k8s_env(container)


@dataclass(frozen=True)
class Launch:
    """One way farmhand is started by these files: where, its arguments and env."""

    where: str
    args: list[str]
    env: dict[str, str]


def launches() -> list[Launch]:
    found: list[Launch] = []
    for target in documented_images():
        image = image_of(target)
        found.append(
            Launch(f"Dockerfile {target}", farmhand_args(image.entrypoint, image.cmd), image.env)
        )
    for name, service in compose()["services"].items():
        image = image_of(service["build"]["target"])
        found.append(
            Launch(
                f"compose {name}",
                farmhand_args(image.entrypoint, service.get("command", image.cmd)),
                {**image.env, **compose_env(service)},
            )
        )
    images = {image: target for target, image in documented_images().items()}
    for container in pod_containers():
        image = image_of(images[container["image"]])
        assert "command" not in container, "`command` would replace tini: use `args`"
        env = {**image.env, **k8s_env(container)}
        args = farmhand_args(image.entrypoint, container.get("args", image.cmd))
        found.append(Launch(f"kubernetes {container['name']}", args, env))
        if args[0] == "manager":
            found.append(
                Launch("kubernetes manager behind a proxy", args, {**env, **proxy_patch_env()})
            )
    return found


# -------------------------------------------------------------------------- tests


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert COMPOSE in files and len(files) >= 5
    for path in files:
        assert load_all(path), f"{path} is empty"


def test_every_farmhand_command_line_parses() -> None:
    seen: set[str] = set()
    for launch in launches():
        try:
            command, _ = parse_farmhand(launch.args, launch.env)
        except ClickException as error:
            pytest.fail(f"{launch.where}: farmhand {' '.join(launch.args)}: {error}")
        seen.add(command)
    assert seen == {"manager", "worker"}


def test_a_wrong_option_or_value_would_be_caught() -> None:
    """The checker itself: parsing is strict, not `--help`-deep."""
    with pytest.raises(_click_error("NoSuchOption")):
        parse_farmhand(["worker", "--work-directory", "/x"], {})
    with pytest.raises(BadParameter):
        parse_farmhand(["manager", "--port", "http"], {})
    with pytest.raises(BadParameter):
        parse_farmhand(["manager"], {"FARMHAND_MAX_ATTEMPTS": "0"})
    assert not manager_reads("FARMHAND_NO_SUCH_SETTING", "1")
    assert not worker_reads("FARMHAND_DATABASE_URL")


def test_every_farmhand_variable_is_read_by_the_process_it_is_given_to() -> None:
    for launch in launches():
        for name, value in launch.env.items():
            if not name.startswith("FARMHAND_"):
                continue
            if launch.args[0] == "manager":
                assert manager_reads(name, value), f"{launch.where}: the manager ignores {name}"
            else:
                assert worker_reads(name), f"{launch.where}: the worker ignores {name}"


def test_the_proxy_patch_turns_on_the_proxy_options() -> None:
    env = proxy_patch_env()
    _, params = parse_farmhand(["manager"], env)
    assert params["proxy_headers"] is True
    assert params["forwarded_allow_ips"] == env["FARMHAND_FORWARDED_ALLOW_IPS"] != "*"
    assert ManagerSettings.from_env(env).auth.secure_cookies


def test_worker_sizes_and_names() -> None:
    """--cache-size is checked in the command's body, not by click: check it here. No
    worker sets --name: its host name (a StatefulSet pod's stable name) is its identity."""
    for launch in launches():
        if launch.args[0] != "worker":
            continue
        _, params = parse_farmhand(launch.args, launch.env)
        if params["cache_size"] is not None:
            parse_size(params["cache_size"])
        assert params["name"] is None, launch.where
        if not launch.where.startswith("Dockerfile"):  # an image cannot know its manager
            assert params["manager"] != "http://localhost:8080", f"{launch.where}: no manager"


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The manager's real app on a fresh SQLite data dir."""
    from farmhand.manager.app import create_app

    data_dir = tmp_path_factory.mktemp("manager")
    with TestClient(create_app(ManagerSettings(data_dir=data_dir))) as client:
        yield client


def test_probes_and_health_checks_answer_on_the_manager(manager: TestClient) -> None:
    """Each probe's path, asked of the real app without a token, answers 200."""
    paths = []
    for container in pod_containers():
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in container:
                paths.append(container[kind]["httpGet"]["path"])
    assert len(paths) == 3
    (url,) = re.findall(
        r"'(http[^']+)'", " ".join(compose()["services"]["manager"]["healthcheck"]["test"])
    )
    paths.append(urlsplit(url).path)
    for path in paths:
        assert manager.get(path).status_code == 200, path
    assert manager.get("/no-such-probe").status_code == 404  # the check can fail


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A port given by number or by a container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def test_ports_agree() -> None:
    image = image_of("manager")
    _, params = parse_farmhand(farmhand_args(image.entrypoint, image.cmd), image.env)
    port = params["port"]
    assert params["host"] == "0.0.0.0"  # reachable from outside the container
    assert image.expose == [port]

    services = compose()["services"]
    _, params = parse_farmhand(services["manager"]["command"], compose_env(services["manager"]))
    assert params["port"] == port and params["host"] == "0.0.0.0"
    assert [str(p).rsplit(":", 1)[1] for p in services["manager"]["ports"]] == [str(port)]
    health = " ".join(services["manager"]["healthcheck"]["test"])
    assert f":{port}/" in health
    worker_url = urlsplit(compose_env(services["worker"])["FARMHAND_URL"])
    assert (worker_url.hostname, worker_url.port) == ("manager", port)

    manager = k8s_workload("manager")["spec"]["template"]["spec"]["containers"][0]
    _, params = parse_farmhand(manager["args"], k8s_env(manager))
    assert params["port"] == port and params["host"] == "0.0.0.0"
    assert [p["containerPort"] for p in manager["ports"]] == [port]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container_port(manager, manager[kind]["httpGet"]["port"]) == port
    (service,) = [s for s in k8s_objects("Service") if s["spec"].get("clusterIP") != "None"]
    (service_port,) = service["spec"]["ports"]
    assert container_port(manager, service_port["targetPort"]) == port
    assert service["spec"]["selector"].items() <= (
        k8s_workload("manager")["spec"]["template"]["metadata"]["labels"].items()
    )

    worker = k8s_workload("worker")["spec"]["template"]["spec"]["containers"][0]
    url = urlsplit(k8s_env(worker)["FARMHAND_URL"])
    assert (url.hostname, url.port) == (service["metadata"]["name"], service_port["port"])

    (ingress,) = load_all(KUBERNETES / "ingress.example.yaml")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] == service_port["name"]


def test_images_are_the_documented_targets() -> None:
    images = documented_images()
    stages = dockerfile_stages()
    assert {"manager", "worker"} <= images.keys() <= stages.keys()
    for target, image in images.items():
        assert image.split(":")[1] == __version__, f"{image}: tag it with farmhand's version"
        assert image_of(target).user == "farmhand", f"{target} must not run as root"
        assert image_of(target).entrypoint[0] == "tini", "tini passes SIGTERM on, reaps"

    for name, service in compose()["services"].items():
        assert service["build"]["context"] == "..", "the build context is the repo root"
        assert service["build"]["dockerfile"] == "deploy/container/Dockerfile"
        assert images[service["build"]["target"]] == service["image"], name

    for container in pod_containers():
        assert container["image"] in images.values(), container["name"]
    (kustomization,) = load_all(KUBERNETES / "kustomization.yaml")
    for entry in kustomization["images"]:
        assert f"{entry['name']}:{entry['newTag']}" in images.values()
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file()
    assert "secret.example.yaml" not in kustomization["resources"]  # no placeholder token


def test_data_lives_on_volumes() -> None:
    """The manager's data dir and the worker's work dir are mounted volumes."""
    image = image_of("manager")
    data_dir = image.env["FARMHAND_DATA_DIR"]
    assert data_dir in image.volumes

    services = compose()["services"]
    mounts = [m.split(":")[1] for m in services["manager"]["volumes"]]
    assert compose_env(services["manager"])["FARMHAND_DATA_DIR"] == data_dir in mounts

    manager = k8s_workload("manager")["spec"]["template"]["spec"]["containers"][0]
    assert k8s_env(manager)["FARMHAND_DATA_DIR"] == data_dir
    assert data_dir in [m["mountPath"] for m in manager["volumeMounts"]]

    workers = k8s_workload("worker")
    assert workers["kind"] == "StatefulSet"
    worker = workers["spec"]["template"]["spec"]["containers"][0]
    _, params = parse_farmhand(worker["args"], k8s_env(worker))
    assert str(params["work_dir"]) in [m["mountPath"] for m in worker["volumeMounts"]]
    claims = [c["metadata"]["name"] for c in workers["spec"]["volumeClaimTemplates"]]
    assert [m["name"] for m in worker["volumeMounts"]] == claims


def test_workers_get_time_to_stop_cleanly() -> None:
    """What a worker does on SIGTERM, each step bounded by `shutdown_grace`: cancel the
    render, abandon uploads (2 s), release the task, stop the progress reporter and the
    heartbeat, then sign off (one request: its connect timeout). SIGKILL must not come
    first."""
    grace = WorkerSettings.shutdown_grace
    needed = 4 * grace + 2 + (DEFAULT_TIMEOUT.connect or 0)
    workers = k8s_workload("worker")["spec"]["template"]["spec"]
    assert workers["terminationGracePeriodSeconds"] >= needed
    stop = compose()["services"]["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", stop) and int(stop[:-1]) >= needed
