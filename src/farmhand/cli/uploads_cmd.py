"""`farmhand uploads list | abort`: your unfinished uploads, which hold your quota.

An unfinished resumable upload counts against its owner's storage quota by the size it
announced, until it is finished, aborted, or left without a byte for
`blob_retention_days`. `farmhand submit` resumes its own after a crash or an outage, and
aborts those it began when canceled (client/submission.py); these commands are for the
rest (an older client, a file changed since, a crash whose submit will not be run
again), and what the manager's quota refusal points an artist to.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from farmhand.cli.admin_cmd import human
from farmhand.cli.jobs_cmd import TokenOption, UrlOption, console, fail, manager_errors, open_client
from farmhand.cli.words import plural

uploads = typer.Typer(
    no_args_is_help=True, help="Your unfinished uploads (they count against your quota)."
)


@uploads.command("list")
def list_uploads(url: UrlOption = None, token: TokenOption = None) -> None:
    """Your unfinished uploads: how much of each arrived, and the size it holds of your
    quota."""
    with manager_errors(), open_client(url, token) as client:
        found = client.list_uploads()
    if not found:
        console.print("no unfinished uploads")
        return
    table = Table("id", "sha256", "arrived", "holds of your quota")
    for upload in found:
        table.add_row(upload.id, upload.sha256[:12], human(upload.offset), human(upload.size))
    console.print(table)
    held = human(sum(upload.size for upload in found))
    console.print(f"{plural(len(found), 'unfinished upload')}, holding {held} of your quota")


@uploads.command()
def abort(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids of uploads to abort.")] = None,
    all_uploads: Annotated[
        bool, typer.Option("--all", help="Abort all your unfinished uploads.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Abort unfinished uploads: their bytes are discarded and your quota freed (a
    `farmhand submit` of the same files then uploads them from the start)."""
    if not ids and not all_uploads:
        raise fail("name the uploads to abort (farmhand uploads list shows them), or --all")
    with manager_errors(), open_client(url, token) as client:
        chosen = ids or [upload.id for upload in client.list_uploads()]
        for upload_id in chosen:
            client.abort_upload(upload_id)
    console.print(f"aborted {plural(len(chosen), 'upload')}")
