"""`DELETE /api/blobs/{sha256}`: a user releases a file they uploaded that no job uses.

QA round 14 (add-on): a submit canceled just after its 200 MiB file was stored left that
file counting against the artist's quota until garbage collection, an hour later, and
the next submit was refused for it. Users could not delete blobs at all. Now the owner
of an upload may give it up (a canceled `farmhand submit` does, client/submission.py):
only their own claim, and the file only if nothing else holds it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farmhand.manager.app import create_app
from farmhand.shared.blobpaths import blob_path
from tests.integration.conftest import FAKE_BLEND, Farm, make_settings

QUOTA = 100_000


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    settings = make_settings(tmp_path / "data", user_quota_bytes=QUOTA)
    with TestClient(create_app(settings)) as client:
        assert settings.admin_token and settings.runner_token
        yield Farm(client, settings.admin_token, settings.runner_token, settings.data_dir)


def user(farm: Farm, name: str) -> dict[str, str]:
    answer = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": name})
    assert answer.status_code == 201, answer.text
    return bearer(answer.json()["token"])


def upload(farm: Farm, who: dict[str, str], data: bytes) -> str:
    answer = farm.client.put(f"/api/blobs/{sha256(data)}", headers=who, content=data)
    assert answer.status_code in (200, 201), answer.text
    return sha256(data)


def missing(farm: Farm, who: dict[str, str], sha: str) -> bool:
    answer = farm.client.post("/api/blobs/missing", headers=who, json={"hashes": [sha]})
    return sha in answer.json()["missing"]


def on_disk(farm: Farm, sha: str) -> bool:
    return blob_path(farm.data_dir / "blobs", sha).is_file()


def usage(farm: Farm, name: str) -> int:
    users = farm.client.get("/api/admin/usage", headers=farm.admin).json()["users"]
    return int(next(u["bytes"] for u in users if u["name"] == name))


def test_an_upload_no_job_uses_is_released_and_frees_the_quota(farm: Farm) -> None:
    alice = user(farm, "alice")
    data = FAKE_BLEND + os.urandom(60_000)
    sha = upload(farm, alice, data)
    assert usage(farm, "alice") == len(data)
    second = FAKE_BLEND + os.urandom(60_000)  # with the first, past the quota
    refused = farm.client.put(f"/api/blobs/{sha256(second)}", headers=alice, content=second)
    assert refused.status_code == 413, refused.text

    answer = farm.client.delete(f"/api/blobs/{sha}", headers=alice)

    assert answer.status_code == 204, answer.text
    assert usage(farm, "alice") == 0
    assert not on_disk(farm, sha), "its file is removed"
    assert missing(farm, alice, sha), "released: uploaded again to be used"
    assert upload(farm, alice, second) == sha256(second)
    again = farm.client.delete(f"/api/blobs/{sha}", headers=alice)
    assert again.status_code == 404, again.text


def test_only_the_owners_claim_goes_and_the_answer_tells_nothing_of_others(
    farm: Farm,
) -> None:
    alice, bob, eve = user(farm, "alice"), user(farm, "bob"), user(farm, "eve")
    shared = FAKE_BLEND + os.urandom(5000)
    sha = upload(farm, alice, shared)
    upload(farm, bob, shared)
    nobodys = sha256(os.urandom(64))

    never_sent = farm.client.delete(f"/api/blobs/{sha}", headers=eve)
    not_stored = farm.client.delete(f"/api/blobs/{nobodys}", headers=eve)
    released = farm.client.delete(f"/api/blobs/{sha}", headers=alice)

    assert never_sent.status_code == not_stored.status_code == 404
    assert never_sent.json()["detail"].replace(sha, "") == not_stored.json()["detail"].replace(
        nobodys, ""
    ), "someone else's file is answered as one nobody stored"
    assert missing(farm, eve, sha)
    assert released.status_code == 204, released.text
    assert usage(farm, "alice") == 0
    assert not missing(farm, bob, sha), "bob's upload of the same bytes is untouched"
    assert on_disk(farm, sha)
    bad = farm.client.delete("/api/blobs/not-a-hash", headers=alice)
    assert 400 <= bad.status_code < 500


def test_a_file_a_job_uses_or_asked_for_since_is_kept(farm: Farm) -> None:
    alice = user(farm, "alice")
    scene = FAKE_BLEND + os.urandom(3000)
    sha = upload(farm, alice, scene)
    job = farm.client.post(
        "/api/jobs",
        headers=alice,
        json={"main_file": "a.blend", "files": {"a.blend": sha}, "frame_end": 1},
    )
    assert job.status_code == 202, job.text
    used = farm.client.delete(f"/api/blobs/{sha}", headers=alice)
    assert used.status_code == 409 and "job of yours" in used.json()["detail"], used.text

    other = FAKE_BLEND + os.urandom(3000)
    other_sha = upload(farm, alice, other)
    assert not missing(farm, alice, other_sha)  # another submit of hers learns it is there
    asked = farm.client.delete(f"/api/blobs/{other_sha}", headers=alice)
    assert asked.status_code == 409 and "since you uploaded" in asked.json()["detail"], asked.text
    assert not missing(farm, alice, other_sha), "kept for the submit that asked"
    assert on_disk(farm, sha) and on_disk(farm, other_sha)


def job_naming(farm: Farm, who: dict[str, str], sha: str) -> int:
    answer = farm.client.post(
        "/api/jobs",
        headers=who,
        json={"main_file": "a.blend", "files": {"a.blend": sha}, "frame_end": 1},
    )
    return int(answer.status_code)


def test_the_answer_after_asking_is_the_same_whether_or_not_anyone_else_holds_it(
    farm: Farm,
) -> None:
    """The reviewer's probe: upload, ask `missing`, release. It answered 409 when nobody
    else had the file and 204 when someone did, telling a user of other people's files
    (docs/SECURITY.md says the call tells nothing about them)."""
    alice, bob = user(farm, "alice"), user(farm, "bob")
    alone = FAKE_BLEND + os.urandom(3000)
    shared = FAKE_BLEND + os.urandom(3000)
    upload(farm, bob, shared)
    answers = []
    for data in (alone, shared):
        sha = upload(farm, alice, data)
        assert not missing(farm, alice, sha)
        answer = farm.client.delete(f"/api/blobs/{sha}", headers=alice)
        answers.append((answer.status_code, answer.json()["detail"].replace(sha, "")))

    assert answers[0] == answers[1], answers
    assert answers[0][0] == 409


def test_a_second_submit_that_asked_keeps_the_file_a_canceled_one_releases(
    farm: Farm,
) -> None:
    """Bob holds the file too. Alice's submit 1 uploads it; her submit 2 asks `missing`,
    is told it is stored and skips it; she cancels submit 1, whose release must not take
    her claim, or submit 2's job is refused for a file she never uploaded."""
    alice, bob = user(farm, "alice"), user(farm, "bob")
    scene = FAKE_BLEND + os.urandom(3000)
    upload(farm, bob, scene)
    sha = upload(farm, alice, scene)  # submit 1
    assert not missing(farm, alice, sha)  # submit 2: stored, not sent

    released = farm.client.delete(f"/api/blobs/{sha}", headers=alice)  # submit 1 canceled

    assert released.status_code == 409, released.text
    assert job_naming(farm, alice, sha) == 202, "submit 2's job is accepted"


def test_a_claim_not_asked_about_is_released_whoever_else_asked(farm: Farm) -> None:
    """Bob asking about his copy touches the blob but not alice's claim: her release
    goes through (204) and her quota is freed, while the file stays for bob."""
    alice, bob = user(farm, "alice"), user(farm, "bob")
    data = FAKE_BLEND + os.urandom(3000)
    upload(farm, bob, data)
    sha = upload(farm, alice, data)
    assert not missing(farm, bob, sha)

    released = farm.client.delete(f"/api/blobs/{sha}", headers=alice)

    assert released.status_code == 204, released.text
    assert usage(farm, "alice") == 0
    assert not missing(farm, bob, sha) and on_disk(farm, sha)
