"""Where the CLI finds its manager and token: flags, then env, then a config file.

The order lets a script override a person's defaults without editing files, and keeps
tokens out of shell history for everyday use (`~/.config/farmhand/config.toml`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://localhost:8080"


class ConfigError(Exception):
    """The configuration is missing something or cannot be read."""


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$FARMHAND_CONFIG`, else `$XDG_CONFIG_HOME/farmhand/config.toml` (or `~/.config`)."""
    env = os.environ if env is None else env
    if env.get("FARMHAND_CONFIG"):
        return Path(env["FARMHAND_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "farmhand" / "config.toml"


def read_config_file(path: Path) -> dict[str, str]:
    """The `url` and `token` keys of the config file; empty if it does not exist."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return {key: str(data[key]) for key in ("url", "token") if key in data}


def resolve(
    url: str | None,
    token: str | None,
    env: Mapping[str, str] | None = None,
    require_token: bool = True,
) -> ClientConfig:
    """Pick each value from the first place that has it: flag, env, file, default."""
    env = os.environ if env is None else env
    file_values = read_config_file(config_path(env))
    chosen_url = url or env.get("FARMHAND_URL") or file_values.get("url") or DEFAULT_URL
    chosen_token = token or env.get("FARMHAND_TOKEN") or file_values.get("token") or ""
    if require_token and not chosen_token:
        raise ConfigError(
            'no API token: pass --token, set FARMHAND_TOKEN, or put token = "…" in '
            f"{config_path(env)}"
        )
    return ClientConfig(url=chosen_url.rstrip("/"), token=chosen_token)
