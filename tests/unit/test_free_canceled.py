"""What a canceled `farmhand submit` says it freed (`submission.free_canceled`,
`jobs_cmd.canceled_words`).

Review of b70f7a9: Cancel landing while a small file's whole-file PUT was on the wire
let the manager store it after the client's release got 404 ("nothing stored"), so it
counted against the quota until garbage collection, yet the CLI said "what it had
uploaded was discarded, so none of it counts". A 404 for an upload the submit did not
find and abort itself proves nothing, so the words now say what may still count.
"""

from __future__ import annotations

from farmhand.cli.jobs_cmd import canceled_words
from farmhand.client.errors import FarmhandError
from farmhand.client.submission import SubmitCanceled, free_canceled
from farmhand.shared.schemas import UploadStatus

BIG = "a" * 64
SMALL = "b" * 64
STORED = "c" * 64
DISCARDED = "none of it counts against your storage quota"


class Manager:
    """The client's side of the manager a canceled submit frees on: `unfinished`
    resumable uploads by hash, and the blobs `stored` for the user."""

    def __init__(
        self, unfinished: list[str], stored: set[str], kept: frozenset[str] = frozenset()
    ) -> None:
        self.unfinished = {sha: f"upload-{sha[:4]}" for sha in unfinished}
        self.stored = set(stored)
        self.kept = kept
        """Stored blobs the manager keeps (409: a job of the user's, or another submit of
        theirs, uses them)."""

    def list_uploads(self, timeout: float | None = None) -> list[UploadStatus]:
        return [
            UploadStatus(id=upload_id, sha256=sha, size=10, offset=5, complete=False)
            for sha, upload_id in self.unfinished.items()
        ]

    def abort_upload(self, upload_id: str, timeout: float | None = None) -> None:
        for sha, known in list(self.unfinished.items()):
            if known == upload_id:
                del self.unfinished[sha]
                return
        raise FarmhandError("no upload", 404)

    def release_blob(self, sha256: str, timeout: float | None = None) -> None:
        if sha256 in self.kept:
            raise FarmhandError("another submit of yours asked for it", 409)
        if sha256 not in self.stored:
            raise FarmhandError("you uploaded no file", 404)
        self.stored.discard(sha256)


def words(manager: Manager, begun: dict[str, int]) -> str:
    freed = free_canceled(manager, begun)  # type: ignore[arg-type]
    return canceled_words(SubmitCanceled(freed))


def test_a_whole_file_upload_the_manager_had_not_stored_is_not_said_discarded() -> None:
    """The small file's PUT was on the wire: not listed, not stored yet (404)."""
    manager = Manager(unfinished=[BIG], stored={STORED})

    said = words(manager, {BIG: 50_000_000, SMALL: 1000, STORED: 2000})

    assert DISCARDED not in said, said
    assert "perhaps 1 file still on the way" in said, said
    assert "farmhand uploads list" in said, said
    assert manager.unfinished == {} and manager.stored == set(), "the rest is freed"


def test_what_it_found_and_freed_is_said_discarded() -> None:
    """The large file's unfinished upload aborted (its hash then 404s: nothing can land),
    the stored file released: all of it verified gone."""
    manager = Manager(unfinished=[BIG], stored={STORED})

    said = words(manager, {BIG: 50_000_000, STORED: 2000})

    assert DISCARDED in said, said
    assert "perhaps" not in said, said


def test_a_file_the_manager_kept_for_another_submit_is_not_said_discarded() -> None:
    """A 409: another submit of the user's asked for the file since (or their job uses
    it), so it is kept and still counts: "none of it counts" would be untrue."""
    manager = Manager(unfinished=[], stored={STORED, SMALL}, kept=frozenset({SMALL}))

    said = words(manager, {STORED: 2000, SMALL: 1000})

    assert DISCARDED not in said, said
    assert "1 file kept by the manager (used by a job or another submit of yours)" in said
    assert "perhaps" not in said, said
    assert manager.stored == {SMALL}, "the rest is freed"
