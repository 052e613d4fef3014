"""`farmhand admin usage | gc`: storage housekeeping for the farm's admins."""

from __future__ import annotations

import typer
from rich.table import Table

from farmhand.cli.jobs_cmd import TokenOption, UrlOption, console, manager_errors, open_client
from farmhand.cli.shown import shown
from farmhand.cli.words import plural

admin = typer.Typer(no_args_is_help=True, help="Storage housekeeping (admins only).")


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@admin.command()
def usage(url: UrlOption = None, token: TokenOption = None) -> None:
    """Disk used by the blob store, unfinished uploads and thumbnails, per user, and what
    garbage collection will free."""
    with manager_errors(), open_client(url, token) as client:
        report = client.storage_usage()
    console.print(
        f"blob store: {human(report.total_bytes)} in {report.blobs} blobs "
        f"({human(report.referenced_bytes)} used by jobs, "
        f"{human(report.unreferenced_bytes)} unreferenced, kept "
        f"{report.blob_retention_days:g} days)"
    )
    if report.open_uploads:
        console.print(
            f"{plural(report.open_uploads, 'unfinished upload')}, holding "
            f"{human(report.open_upload_bytes)} (not in any blob yet)"
        )
    thumbnails = plural(report.thumbnail_files, "file")
    console.print(f"thumbnails: {human(report.thumbnail_bytes)} in {thumbnails}")
    console.print(f"disk: {human(report.disk_free_bytes)} free of {human(report.disk_total_bytes)}")
    quota = report.user_quota_bytes
    table = Table("user", "jobs", "storage", "unfinished uploads", "quota used")
    for user in report.users:
        uploads = (
            f"{user.open_uploads} ({human(user.open_upload_bytes)} of "
            f"{human(user.open_upload_reserved_bytes)})"
            if user.open_uploads
            else "-"
        )
        # What the quota counts: their blobs and what their unfinished uploads announced.
        counted = user.bytes + user.open_upload_reserved_bytes
        if user.role == "admin":
            share = "no quota (admin)"  # as `enforce_quota`: admins run the farm
        else:
            share = f"{100 * counted / quota:.0f} % of {human(quota)}" if quota else "no quota"
        table.add_row(shown(user.name), str(user.jobs), human(user.bytes), uploads, share)
    console.print(table)


@admin.command()
def gc(url: UrlOption = None, token: TokenOption = None) -> None:
    """Remove blobs no job references and past their retention, now."""
    with manager_errors(), open_client(url, token) as client:
        result = client.collect_garbage()
    console.print(
        f"removed {result.removed} blobs and {result.stray_files} stray files, "
        f"freed {human(result.freed_bytes)}; {result.kept_unreferenced} unreferenced "
        "blobs are still inside their retention"
    )
