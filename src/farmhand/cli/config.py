"""Where the CLI finds its manager and token: flags, then env, then a config file.

The order lets a script override a person's defaults without editing files, and keeps
tokens out of shell history for everyday use (`~/.config/farmhand/config.toml`).
A manager behind TLS with a private CA is reached with `ca_bundle` (`--ca-bundle`,
`FARMHAND_CA_BUNDLE`, or `ca_bundle = "…"` in the file); certificates are always
verified, there is deliberately no switch to turn that off for people's commands.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
import typer

DEFAULT_URL = "http://localhost:8080"
CA_BUNDLE_ENV = "FARMHAND_CA_BUNDLE"


class ConfigError(Exception):
    """The configuration is missing something or cannot be read."""


def token_problem(token: str) -> str | None:
    """Why `token` cannot be a farmhand token, or None if it could be.

    A token travels in an HTTP header (`Authorization: Bearer …`), where only visible
    ASCII survives: farmhand's own tokens are `fh_…` and URL-safe base64, and a preset
    one (`FARMHAND_ADMIN_TOKEN`) reaches the manager the same way. Anything else (an
    accent, a space, the newline of a pasted line) would crash the HTTP library or be
    reported as an unreachable manager; said here instead, the token is the culprit.
    """
    odd = sorted({char for char in token if not "!" <= char <= "~"})
    if not odd:
        return None
    shown = ", ".join(repr(char) for char in odd)
    return f"it has characters a token never has ({shown})"


def check_token(token: str, source: str) -> None:
    """Raise `ConfigError` for a token no manager could accept (`token_problem`)."""
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(f"the API token from {source} is not a valid farmhand token: {problem}")


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str
    ca_bundle: str | None = None
    """A PEM file of the CA(s) that signed the manager's TLS certificate (a private CA)."""

    @property
    def verify(self) -> bool | str:
        """What the HTTP client verifies the manager's certificate against: always something."""
        return self.ca_bundle or True


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$FARMHAND_CONFIG`, else `$XDG_CONFIG_HOME/farmhand/config.toml` (or `~/.config`)."""
    env = os.environ if env is None else env
    if env.get("FARMHAND_CONFIG"):
        return Path(env["FARMHAND_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "farmhand" / "config.toml"


def read_config_file(path: Path) -> dict[str, str]:
    """The `url`, `token` and `ca_bundle` keys of the config file; empty if it does not exist."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return {key: str(data[key]) for key in ("url", "token", "ca_bundle") if key in data}


def resolve(
    url: str | None,
    token: str | None,
    env: Mapping[str, str] | None = None,
    require_token: bool = True,
    ca_bundle: str | None = None,
) -> ClientConfig:
    """Pick each value from the first place that has it: flag, env, file, default.

    Every client of people's commands is built from this (`open_client`), so the token
    is checked here, naming where it came from."""
    env = os.environ if env is None else env
    file_values = read_config_file(config_path(env))
    chosen_url = url or env.get("FARMHAND_URL") or file_values.get("url") or DEFAULT_URL
    sources = (
        (token, "--token"),
        (env.get("FARMHAND_TOKEN"), "FARMHAND_TOKEN"),
        (file_values.get("token"), f"{config_path(env)}"),
    )
    chosen_token, source = next(((value, where) for value, where in sources if value), ("", ""))
    if require_token and not chosen_token:
        raise ConfigError(
            'no API token: pass --token, set FARMHAND_TOKEN, or put token = "…" in '
            f"{config_path(env)}"
        )
    check_token(chosen_token, source)
    chosen_ca = ca_bundle or env.get(CA_BUNDLE_ENV) or file_values.get("ca_bundle") or None
    if chosen_ca is not None:
        chosen_ca = str(Path(chosen_ca).expanduser())
        if not Path(chosen_ca).is_file():
            raise ConfigError(
                f"CA bundle {chosen_ca} is not a file (--ca-bundle / {CA_BUNDLE_ENV})"
            )
    return ClientConfig(url=chosen_url.rstrip("/"), token=chosen_token, ca_bundle=chosen_ca)


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger writing to whatever `sys.stderr` is when it logs, not when the CLI
    started: a test runner that swaps stderr for each command closes the old one."""
    return structlog.PrintLogger(sys.stderr)


def global_options(
    ca_bundle: Annotated[
        Path | None,
        typer.Option(
            "--ca-bundle",
            envvar=CA_BUNDLE_ENV,
            help="CA bundle (PEM) that signed the manager's TLS certificate.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """farmhand: a distributed render farm for Blender."""
    # Log lines of the client's code (a retried upload, say) go to stderr: stdout is the
    # command's output, which `--json-events` readers (the add-on) parse line by line.
    # The manager, worker and node configure their own logging when they start.
    structlog.configure(logger_factory=_stderr_logger)
    if ca_bundle is not None:
        # Every sub-command (and a worker started by this process) reads the variable.
        os.environ[CA_BUNDLE_ENV] = str(ca_bundle)
