"""The one `farmhand` command; each sub-command lives in its own module."""

import typer

from farmhand.cli import control_cmd, jobs_cmd, runners_cmd
from farmhand.cli.addon_cmd import addon
from farmhand.cli.admin_cmd import admin
from farmhand.cli.backup_cmd import backup
from farmhand.cli.config import global_options
from farmhand.cli.demo_cmd import demo
from farmhand.cli.manager_cmd import manager
from farmhand.cli.node_cmd import node
from farmhand.cli.orchestrator_cmd import orchestrator
from farmhand.cli.uploads_cmd import uploads
from farmhand.cli.users_cmd import users
from farmhand.cli.worker_cmd import worker

app = typer.Typer(no_args_is_help=True, help="farmhand: a distributed render farm for Blender.")
app.callback()(global_options)
app.command()(manager)
app.command()(worker)
app.command()(node)
app.command()(orchestrator)
jobs_cmd.register(app)
control_cmd.register(app)
runners_cmd.register(app)
app.command()(demo)
app.command()(backup)
app.add_typer(users, name="users")
app.add_typer(uploads, name="uploads")
app.add_typer(admin, name="admin")
app.add_typer(addon, name="addon")


def main() -> None:
    app()
