"""`farmhand manager`'s scheduling flags and their environment variables reach the
manager's settings (and through them the scheduling policy); bad values are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from farmhand.cli import manager_cmd
from farmhand.cli.app import app
from farmhand.manager import app as manager_app
from farmhand.manager.scheduling.policy import Policy
from farmhand.manager.settings import ManagerSettings


class _Started(Exception):
    def __init__(self, settings: ManagerSettings) -> None:
        self.settings = settings


def _settings_of(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str] | None = None
) -> ManagerSettings:
    """The settings `farmhand manager ARGS` would start with (it stops before serving)."""

    def prepare(settings: ManagerSettings) -> None:
        raise _Started(settings)

    monkeypatch.setattr(manager_app, "prepare", prepare)
    monkeypatch.setattr(manager_cmd, "configure_logging", lambda *_, **__: None)
    for name in list(env or {}):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["manager", *args], env=env)
    assert isinstance(result.exception, _Started), result.output
    return result.exception.settings


def test_the_defaults_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_of(monkeypatch, [])
    assert Policy.from_settings(settings) == Policy.from_settings(ManagerSettings())
    assert (settings.heartbeat_timeout, settings.task_timeout) == (30.0, 1800.0)


def test_flags_set_the_scheduling_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_of(
        monkeypatch,
        [
            "--max-attempts", "5",
            "--blocklist-threshold", "1",
            "--job-failure-share", "0.25",
            "--task-timeout", "600",
            "--forgotten-task-after", "4",
            "--heartbeat-timeout", "12",
        ],
    )  # fmt: skip
    assert Policy.from_settings(settings) == Policy(
        max_attempts=5, blocklist_threshold=1, job_failure_share=0.25, forgotten_task_after=4
    )
    assert (settings.heartbeat_timeout, settings.task_timeout) == (12.0, 600.0)


def test_environment_variables_set_them_too_and_flags_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "FARMHAND_HEARTBEAT_TIMEOUT": "45",
        "FARMHAND_MAX_ATTEMPTS": "2",
        "FARMHAND_BLOCKLIST_THRESHOLD": "7",
        "FARMHAND_JOB_FAILURE_SHARE": "0.5",
        "FARMHAND_TASK_TIMEOUT": "900",
        "FARMHAND_FORGOTTEN_TASK_AFTER": "20",
    }
    settings = _settings_of(monkeypatch, ["--max-attempts", "9"], env)
    assert settings.heartbeat_timeout == 45.0, "the variable is not overridden by a default"
    assert settings.max_attempts == 9
    assert settings.blocklist_threshold == 7
    assert settings.job_failure_share == 0.5
    assert settings.task_timeout == 900.0
    assert settings.forgotten_task_after == 20.0


@pytest.mark.parametrize(
    "args",
    [
        ["--job-failure-share", "1.5"],
        ["--blocklist-threshold", "0"],
        ["--max-attempts", "many"],
        ["--task-timeout", "-1"],
    ],
    ids=["share-above-1", "threshold-0", "attempts-not-a-number", "negative-timeout"],
)
def test_bad_values_are_refused_before_the_manager_starts(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setattr(manager_app, "prepare", pytest.fail)
    result = CliRunner().invoke(app, ["manager", *args])
    assert result.exit_code == 2
    assert args[0] in result.output


def loaded_by(module: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has loaded after importing `module`."""
    probe = f"import sys, {module}; print(' '.join(m for m in {candidates!r} if m in sys.modules))"
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()


def test_commands_that_talk_to_a_manager_do_not_load_the_servers() -> None:
    """Every `farmhand` command imports the CLI app: the manager's web app (FastAPI, its
    routes, OAuth), uvicorn, Alembic and SQLAlchemy, and the workers' numpy and OpenEXR
    (EXR tiles), must load only in the commands and tasks that use them, or `farmhand
    job 7` (and the Blender add-on, which runs it every few seconds) starts a second
    slower for nothing."""
    heavy = (
        "fastapi", "uvicorn", "alembic", "sqlalchemy", "farmhand.manager.app",
        "farmhand.node.app", "farmhand.orchestrator.app", "numpy", "OpenEXR",
    )  # fmt: skip
    assert loaded_by("farmhand.cli.app", heavy) == []


def test_the_supervisor_of_several_processes_gets_every_server_option() -> None:
    server = manager_cmd.ServerOptions(
        host="0.0.0.0",
        port=8443,
        log_level="warning",
        timeout_keep_alive=75,
        timeout_graceful_shutdown=3,
        proxy_headers=True,
        forwarded_allow_ips="10.0.0.1",
        ssl_certfile="/etc/farm/cert.pem",
        ssl_keyfile="/etc/farm/key.pem",
    )
    command = manager_cmd.supervisor_command(server, 3)

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert command[:4] == [
        "-m",
        "uvicorn",
        "farmhand.manager.app:app_from_environment",
        "--factory",
    ]
    assert (value("--workers"), value("--host"), value("--port")) == ("3", "0.0.0.0", "8443")
    assert value("--ssl-certfile") == "/etc/farm/cert.pem"
    assert value("--ssl-keyfile") == "/etc/farm/key.pem"
    assert "--proxy-headers" in command and value("--forwarded-allow-ips") == "10.0.0.1"
    assert (value("--timeout-keep-alive"), value("--log-level")) == ("75", "warning")
    assert "--no-access-log" in command
    # Uvicorn's protocol with a deadline for request heads, its timeout handed over in
    # the environment (the supervisor's processes cannot be given a class).
    assert value("--http") == "farmhand.manager.connections:ProcessHeadTimeoutProtocol"

    plain = manager_cmd.supervisor_command(
        manager_cmd.ServerOptions("127.0.0.1", 8080, "info", 75, 3, False, None, None, None), 2
    )
    assert "--no-proxy-headers" in plain
    assert not {"--forwarded-allow-ips", "--ssl-certfile", "--ssl-keyfile"} & set(plain)


def test_the_manager_does_not_load_the_workers_image_libraries() -> None:
    """numpy and OpenEXR cut and merge EXR tiles on workers; the manager (which imports
    the worker's Blender command line for blend-info) would hold 20 MB of them for
    nothing in every server process."""
    assert loaded_by("farmhand.manager.app", ("numpy", "OpenEXR", "farmhand.worker.exr")) == []


def test_the_client_timeout_is_a_flag_and_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings_of(monkeypatch, []).client_timeout == 60.0
    assert _settings_of(monkeypatch, ["--client-timeout", "15"]).client_timeout == 15.0
    env = {"FARMHAND_CLIENT_TIMEOUT": "90"}
    assert _settings_of(monkeypatch, [], env).client_timeout == 90.0


def test_the_connections_per_address_are_a_flag_and_a_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Well above a farm's own needs by default (many workers behind one NAT address,
    `make demo`'s on one machine); 0 turns the limit off."""
    assert _settings_of(monkeypatch, []).max_connections_per_address == 1000
    flag = ["--max-connections-per-address", "0"]
    assert _settings_of(monkeypatch, flag).max_connections_per_address == 0
    env = {"FARMHAND_MAX_CONNECTIONS_PER_ADDRESS": "250"}
    assert _settings_of(monkeypatch, [], env).max_connections_per_address == 250


def test_a_client_timeout_under_a_second_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager_app, "prepare", pytest.fail)
    result = CliRunner().invoke(app, ["manager", "--client-timeout", "0"])
    assert result.exit_code == 2
    assert "--client-timeout" in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="no open-files limit")
def test_the_open_files_limit_is_raised_to_what_the_account_may_have() -> None:
    """A soft limit of 1,024 is reached by a thousand connections; the hard limit is
    what the administrator allowed. Its server processes inherit it."""
    probe = (
        "import resource\n"
        "from farmhand.manager.connections import raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, hard), hard))\n"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    returned, soft, hard = (int(number) for number in result.stdout.splitlines()[-1].split())
    assert soft == returned == hard
