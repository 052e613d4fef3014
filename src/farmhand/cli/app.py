"""The one `farmhand` command; each sub-command lives in its own module."""

import typer

app = typer.Typer(no_args_is_help=True, help="farmhand: a distributed render farm for Blender.")


def main() -> None:
    app()
