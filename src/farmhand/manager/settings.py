"""Manager settings: one object, built by the CLI (or a test) and passed in everywhere.

Nothing in the manager reads the environment on its own; `ManagerSettings.from_env`
is the one place that does, so a test can run two managers side by side.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from farmhand.manager.auth.emails import normal_domain
from farmhand.shared.pathmap import check_variables

T = TypeVar("T")

_UNPREFIXED = ("google_", "discord_", "oidc_", "enable_local_auth", "local_test_")
"""Read without the `FARMHAND_` prefix too: JiggaBlend's names, and OIDC's alike."""


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class AuthSettings:
    """How people sign in: local passwords, OAuth providers, login rate limits.

    The variable names of the providers are JiggaBlend's. A provider is offered when its
    client id is set. The `*_URL` endpoint overrides exist so tests (and unusual set-ups)
    can point Google or Discord at another server.
    """

    enable_local_auth: bool = True
    local_test_email: str | None = None
    """With `local_test_password`: a local user created at start if missing."""
    local_test_password: str | None = None
    secure_cookies: bool = False
    """Always mark session cookies `Secure` (they are anyway on https requests)."""
    allowed_email_domains: tuple[str, ...] = ()
    """When set, OAuth sign-up only for verified e-mail addresses in these domains (in
    the addresses' normal form, `emails.normal_domain`, however they were given)."""
    login_window: float = 900.0
    """Seconds over which failed sign-ins are counted."""
    login_failures_per_account: int = 5
    login_failures_per_address: int = 30

    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_redirect_url: str | None = None
    google_issuer: str = "https://accounts.google.com"
    discord_client_id: str | None = None
    discord_client_secret: str | None = None
    discord_redirect_url: str | None = None
    discord_authorize_url: str = "https://discord.com/oauth2/authorize"
    discord_token_url: str = "https://discord.com/api/oauth2/token"  # noqa: S105 (a URL)
    discord_userinfo_url: str = "https://discord.com/api/users/@me"
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_redirect_url: str | None = None
    oidc_name: str = "Single sign-on"

    def __post_init__(self) -> None:
        # Here, not in `from_env`: settings built in code (tests, `replace`) compare the
        # same way.
        domains = tuple(normal_domain(domain) for domain in self.allowed_email_domains)
        object.__setattr__(self, "allowed_email_domains", domains)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AuthSettings:
        values: dict[str, object] = {}
        for name in cls.__dataclass_fields__:
            unprefixed = name.startswith(_UNPREFIXED)
            raw = (env.get(name.upper()) if unprefixed else None) or env.get(
                "FARMHAND_" + name.upper()
            )
            if not raw:
                continue
            default = getattr(cls, name, None)
            if name == "allowed_email_domains":
                values[name] = tuple(d for d in raw.split(",") if d.strip())
            elif isinstance(default, bool):
                values[name] = _flag(raw)
            elif name in BOUNDS:
                values[name] = BOUNDS[name].parse(f"FARMHAND_{name.upper()}", raw)
            else:
                values[name] = raw
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ManagerSettings:
    data_dir: Path = Path("farmhand-data")
    database_url: str | None = None
    """SQLAlchemy URL; None means SQLite at `<data_dir>/farmhand.sqlite3`."""
    host: str = "127.0.0.1"
    port: int = 8080
    processes: int = 1
    """Server processes sharing the port, the database and the data dir (`--processes`):
    one is one core. Live events and claim wake-ups travel between them
    (`manager/siblings.py`)."""

    heartbeat_timeout: float = 30.0
    """A worker silent for this long is offline and its task goes back to the queue."""
    reaper_interval: float = 2.0
    max_attempts: int = 3
    """How often a task may fail before it, and so its job, fails."""
    blocklist_threshold: int = 3
    """A worker that fails this many tasks of one job gets no more of that job's tasks."""
    job_failure_share: float = 0.0
    """A job fails early once more than this share of its tasks failed for good (0: the
    first one). Either way a job with a failed task cannot end `completed`."""
    task_timeout: float = 1800.0
    """A task with no word from its worker (progress or log) for this long is failed."""
    forgotten_task_after: float = 10.0
    """A worker asking for work is working on nothing: a task still counted as its own,
    handed to it more than this long ago, goes back to the queue without counting a
    failure (the answer that gave it was lost, or the worker dropped it). Short enough to
    beat `task_timeout` by far; long enough that an answer still on its way is not
    mistaken for a lost one."""
    claim_poll_interval: float = 0.5
    """How often a waiting claim looks at the database when not woken up in-process
    (another manager sharing the database may have queued work)."""
    max_claim_wait: float = 60.0
    retry_after: int = 2
    """Seconds suggested to pollers of an unfinished job (the `Retry-After` header)."""
    max_upload_bytes: int = 20 * 1024**3
    """The largest single upload (a blob, a .blend, a project zip, a frame): 413 above it."""
    max_body_bytes: int = 1024**2
    """The largest body of any other request (JSON): 413 above it, before it is read."""
    max_json_depth: int = 32
    """How deeply a JSON body may nest: 400 deeper, so parsers never recurse without end."""
    client_timeout: float = 60.0
    """Seconds a client has to send a request's head (request line and headers), and the
    longest a request body may stop arriving: a connection that passes either is closed
    (`408`), whether it sent credentials or not. Between a body's chunks, not in total:
    a 20 GiB upload may take hours as long as it keeps moving. A response the client stops
    reading is cut off after as long without a byte received."""
    max_connections_per_address: int = 1000
    """Connections one client address may hold open at once (per server process): past it
    a new one is answered `503` and closed. Well above what a farm needs from one address
    (a worker holds up to about five, a browser about seven, and many workers may share a
    NAT address or a machine), far under the open-files limit; 0: no limit. Connections
    from a trusted proxy (`--proxy-headers`) are not counted: the proxy counts its own."""
    user_quota_bytes: int | None = None
    """Per-user storage (distinct blobs of their jobs' inputs and outputs, and the announced
    sizes of their unfinished uploads); None: no quota."""
    max_open_uploads: int = 64
    """Unfinished resumable uploads one user may have at once (409 past it; admins have no
    limit); 0: no limit."""
    blob_retention_days: float = 7.0
    """Blobs a job used and none references any more are removed this long after their
    last use, so a resubmission within that time uploads nothing; uploads no job ever
    used go after `blob_grace_seconds` (see `manager/storage/gc.py`)."""
    blob_grace_seconds: float = 3600.0
    """A blob created or touched this recently is never removed: a client uploads blobs
    first and creates the job naming them after."""
    gc_interval: float = 3600.0
    """Seconds between garbage collection passes; 0 turns the periodic pass off."""
    path_variables: dict[str, dict[str, str]] = field(default_factory=dict)
    """Shared storage roots, two-way: variable → platform → root, e.g. `{"projects":
    {"linux": "/mnt/projects", "windows": "P:\\", "darwin": "/Volumes/projects"}}`
    (`FARMHAND_PATH_VARIABLES`, JSON). See docs/STORAGE.md."""

    admin_token: str | None = None
    """Preset admin API token (`FARMHAND_ADMIN_TOKEN`); generated on first start if None."""
    runner_token: str | None = None
    """Preset runner registration token (`FARMHAND_RUNNER_TOKEN`)."""
    metrics_token: str | None = None
    """A bearer token that reads `GET /metrics` and nothing else (`FARMHAND_METRICS_TOKEN`),
    for a Prometheus scraper, which should not hold an admin's token. Admins can always
    read the metrics."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """Accounts, OAuth and sign-in limits (`AuthSettings.from_env`)."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'farmhand.sqlite3').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @classmethod
    def from_flags(cls, flags: Mapping[str, object]) -> ManagerSettings:
        """`from_env` with `farmhand manager`'s flags as plain JSON values (`data_dir` a
        string): what it hands, through the environment, to the processes it starts."""
        data_dir = flags.get("data_dir")
        return cls.from_env(
            None, **{**flags, "data_dir": None if data_dir is None else Path(str(data_dir))}
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ManagerSettings:
        """Settings from `FARMHAND_*` variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if env.get("FARMHAND_DATA_DIR"):
            values["data_dir"] = Path(env["FARMHAND_DATA_DIR"])
        if env.get("FARMHAND_DATABASE_URL"):
            values["database_url"] = env["FARMHAND_DATABASE_URL"]
        if env.get("FARMHAND_ADMIN_TOKEN"):
            values["admin_token"] = env["FARMHAND_ADMIN_TOKEN"]
        if env.get("FARMHAND_RUNNER_TOKEN"):
            values["runner_token"] = env["FARMHAND_RUNNER_TOKEN"]
        if env.get("FARMHAND_METRICS_TOKEN"):
            values["metrics_token"] = env["FARMHAND_METRICS_TOKEN"]
        for name in _FROM_ENVIRONMENT:
            variable = f"FARMHAND_{name.upper()}"
            if env.get(variable):
                values[name] = BOUNDS[name].parse(variable, env[variable])
        if env.get("FARMHAND_PATH_VARIABLES"):
            values["path_variables"] = _parsed(
                env,
                "FARMHAND_PATH_VARIABLES",
                _path_variables,
                "a table of path variables (docs/STORAGE.md)",
            )
        values["auth"] = AuthSettings.from_env(env)
        for name, value in overrides.items():
            if value is None:
                continue
            if name in BOUNDS:
                # A flag's variable, if set, was checked above: a bad value is the flag's.
                BOUNDS[name].check(f"--{name.replace('_', '-')}", value)
            values[name] = value
        return cls(**values)  # type: ignore[arg-type]


class SettingsError(ValueError):
    """A `FARMHAND_*` variable that cannot be used: the manager does not start, and says
    which variable and why, in one line rather than a traceback."""


@dataclass(frozen=True)
class Bounds:
    """The values one numeric setting may take: the rule for it, wherever it was set.

    A flag, a `FARMHAND_*` variable and the flags `farmhand manager --processes N` hands
    to its servers all pass `ManagerSettings.from_env`, which checks each against its
    entry in `BOUNDS`, so a value the manager cannot use (NaN, a negative interval, a
    duration `timedelta` overflows on) stops it at start, in one line, rather than
    surfacing later as a 500, a refused upload or garbage collection quietly off.
    """

    low: float
    high: float
    whole: bool = False
    """An `int` setting: its variable must be written as one (`3`, not `3.0`)."""
    above_low: bool = False
    """`low` itself is not allowed (a duration of 0 that would make no sense)."""
    unit: str = ""

    def __str__(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        low, high = _shown(self.low), _shown(self.high)
        span = f"above {low} and at most {high}" if self.above_low else f"from {low} to {high}"
        return f"{kind} {span}" + (f" ({self.unit})" if self.unit else "")

    def admits(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if (isinstance(value, float) and not math.isfinite(value)) or value > self.high:
            return False
        return value > self.low if self.above_low else value >= self.low

    def check(self, name: str, value: object) -> None:
        """Raise `SettingsError` naming `name` (a variable or flag) unless `value` fits."""
        if not self.admits(value):
            raise SettingsError(f"{name}={_clipped(repr(value))} is not {self}")

    def parse(self, name: str, text: str) -> int | float:
        """The value of variable `name`, written `text`, if it fits (`SettingsError`)."""
        try:
            value: int | float = int(text) if self.whole else float(text)
        except ValueError:
            raise SettingsError(f"{name}={_clipped(repr(text))} is not {self}") from None
        if not self.admits(value):
            raise SettingsError(f"{name}={_clipped(repr(text))} is not {self}")
        return value


def _clipped(text: str) -> str:
    """A value as the error line shows it: whole, unless it would drown the line."""
    return text if len(text) <= 40 else text[:39] + "…"


def _shown(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)


_LARGEST_INT = 2**63 - 1
"""What a database integer holds: a byte count above it cannot be compared in SQL."""
_SECONDS = 100 * 365.25 * 86400
"""The longest duration (100 years): `timedelta` of far more overflows (a 500), and a
century is `never` to a render farm anyway."""

_Seconds = Bounds(0, _SECONDS, unit="seconds")
_PositiveSeconds = Bounds(0, _SECONDS, above_low=True, unit="seconds")
_AtLeastASecond = Bounds(1, _SECONDS, unit="seconds")

BOUNDS: dict[str, Bounds] = {
    "port": Bounds(1, 65535, whole=True),
    "processes": Bounds(1, 64, whole=True),
    "heartbeat_timeout": _AtLeastASecond,
    "reaper_interval": _PositiveSeconds,
    "max_attempts": Bounds(1, 100, whole=True),
    "blocklist_threshold": Bounds(1, 1000, whole=True),
    "job_failure_share": Bounds(0, 1),
    "task_timeout": _AtLeastASecond,
    "forgotten_task_after": _Seconds,
    "claim_poll_interval": _PositiveSeconds,
    "max_claim_wait": _Seconds,
    "retry_after": Bounds(0, 86400, whole=True, unit="seconds"),
    "max_upload_bytes": Bounds(1, _LARGEST_INT, whole=True, unit="bytes"),
    "max_body_bytes": Bounds(1, _LARGEST_INT, whole=True, unit="bytes"),
    # Python's `json` recurses per level, up to its recursion limit (1000).
    "max_json_depth": Bounds(1, 500, whole=True),
    "client_timeout": _AtLeastASecond,
    "max_connections_per_address": Bounds(0, 1_000_000, whole=True),
    "user_quota_bytes": Bounds(1, _LARGEST_INT, whole=True, unit="bytes"),
    "max_open_uploads": Bounds(0, _LARGEST_INT, whole=True),
    "blob_retention_days": Bounds(0, _SECONDS / 86400, unit="days"),
    "blob_grace_seconds": _Seconds,
    "gc_interval": _Seconds,
    "login_window": _PositiveSeconds,
    "login_failures_per_account": Bounds(1, _LARGEST_INT, whole=True),
    "login_failures_per_address": Bounds(1, _LARGEST_INT, whole=True),
}
"""Every numeric setting of `ManagerSettings` and `AuthSettings`, and what it may be.

`farmhand manager`'s options declare the same `min`/`max` (the command line refuses
them first, with its own message); `from_env` checks here whatever reaches it, which
covers the variables no option reads and what option ranges let through (NaN, inf).
Settings built in code (`ManagerSettings(...)`, as tests do with sub-second timeouts)
are not checked: only what an operator sets is."""

_FROM_ENVIRONMENT = (
    "heartbeat_timeout",
    "max_attempts",
    "blocklist_threshold",
    "job_failure_share",
    "task_timeout",
    "forgotten_task_after",
    "max_upload_bytes",
    "max_body_bytes",
    "client_timeout",
    "max_connections_per_address",
    "user_quota_bytes",
    "max_open_uploads",
    "blob_retention_days",
    "blob_grace_seconds",
    "gc_interval",
)
"""The numeric `ManagerSettings` a `FARMHAND_<NAME>` variable sets."""


def _parsed(env: Mapping[str, str], name: str, parse: Callable[[str], T], what: str) -> T:
    text = env[name]
    try:
        return parse(text)
    except ValueError as error:
        raise SettingsError(f"{name}={text!r} is not {what}: {error}") from None


def _path_variables(text: str) -> dict[str, dict[str, str]]:
    """`{"projects": {"linux": "/mnt/projects", "windows": "P:/"}}`, checked (names,
    absolute roots) so that a typo stops the manager at start, not a job later."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return check_variables(value)
