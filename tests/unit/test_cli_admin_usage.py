"""`farmhand admin usage` as an admin reads it: each user's share of the quota counts
what the quota counts, and admins, who have none, are not shown over it."""

from __future__ import annotations

from types import TracebackType

import pytest

from farmhand.cli import admin_cmd
from farmhand.cli.app import app
from farmhand.shared.schemas import StorageUsage, UserUsage
from tests.unit.test_cli_errors import runner

KIB = 1024


class _Client:
    """Answers `storage_usage` as a manager with a 100 KiB quota would."""

    def __enter__(self) -> _Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def storage_usage(self) -> StorageUsage:
        users = [
            UserUsage(user_id=1, name="root", role="admin", jobs=9, bytes=300 * KIB),
            UserUsage(
                user_id=2,
                name="ann",
                jobs=2,
                bytes=40 * KIB,
                open_uploads=1,
                open_upload_bytes=5 * KIB,
                open_upload_reserved_bytes=20 * KIB,
            ),
        ]
        return StorageUsage(
            blobs=3,
            total_bytes=340 * KIB,
            referenced_bytes=340 * KIB,
            unreferenced_bytes=0,
            open_uploads=1,
            open_upload_bytes=5 * KIB,
            thumbnail_files=2,
            thumbnail_bytes=12 * KIB,
            disk_total_bytes=10**12,
            disk_free_bytes=10**11,
            blob_retention_days=7,
            user_quota_bytes=100 * KIB,
            users=users,
        )


def test_admins_have_no_quota_and_users_count_their_unfinished_uploads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin_cmd, "open_client", lambda url, token: _Client())
    result = runner.invoke(app, ["admin", "usage"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "│" in line}
    assert "no quota (admin)" in rows["root"] and "%" not in rows["root"], rows["root"]
    # 40 KiB of blobs and 20 KiB announced by the unfinished upload, of 100 KiB.
    assert "60 % of 100.0 KiB" in rows["ann"], rows["ann"]
    assert "1 (5.0 KiB of 20.0 KiB)" in rows["ann"], rows["ann"]
    assert "thumbnails: 12.0 KiB in 2 files" in result.output
    assert "1 unfinished upload, holding 5.0 KiB" in result.output
