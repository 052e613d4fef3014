"""The JSON routes the web UI added, and the session cookie, on a real manager app.

Browser-driven tests of the pages are in tests/browser; these check the rules the
pages rely on: the cookie with its CSRF nonce, tokens shown once and revocable, users,
registration tokens, live-event visibility, thumbnails and blend info.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import sqlite3
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from farmhand.manager.api import blendinfo
from farmhand.manager.api.deps import Caller
from farmhand.manager.api.events_stream import event_stream
from farmhand.manager.auth import sessions
from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.events import EventBus
from farmhand.manager.web.thumbnails import thumbnail
from farmhand.shared.blendfile import read_saved_version
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import FAKE_BLEND, Farm, login_nonce, submit_stand_in


def sign_in(farm: Farm, token: str | None = None) -> str:
    """Sign in through the login form; the client keeps the cookie. Returns the CSRF nonce."""
    answer = farm.client.post(
        "/login",
        data={
            "token": token or farm.admin_token,
            "next": "/",
            "login_nonce": login_nonce(farm.client),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    cookie = farm.client.cookies[sessions.SESSION_COOKIE]
    data = sessions.verify(sessions.session_key(farm.data_dir), cookie, utcnow())
    assert data is not None
    return data.csrf


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(farm: Farm, name: str, role: str = "user") -> str:
    answer = farm.client.post(
        "/api/admin/users", headers=farm.admin, json={"name": name, "role": role}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


# ------------------------------------------------------------------------ sessions


def test_login_sets_a_lax_httponly_cookie(farm: Farm) -> None:
    """Lax, not Strict: an OAuth provider's redirect back is a cross-site navigation."""
    nonce = login_nonce(farm.client)
    answer = farm.client.post(
        "/login",
        data={"token": farm.admin_token, "next": "/jobs/1", "login_nonce": nonce},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/jobs/1"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie, "plain http here: a Secure cookie would never come back"


def test_login_refuses_bad_tokens_and_foreign_redirects(farm: Farm) -> None:
    nonce = login_nonce(farm.client)
    answer = farm.client.post(
        "/login", data={"token": "fh_api_nope", "login_nonce": nonce}, follow_redirects=False
    )
    assert answer.status_code == 401
    assert "not valid" in answer.text
    assert sessions.SESSION_COOKIE not in farm.client.cookies
    answer = farm.client.post(
        "/login",
        data={"token": farm.admin_token, "next": "//evil.example/x", "login_nonce": nonce},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/"


@pytest.mark.parametrize("nonce", ["", "forged-" + "x" * 40])
def test_a_login_form_posted_from_elsewhere_signs_nobody_in(farm: Farm, nonce: str) -> None:
    """Login CSRF: another site posts the form with its owner's valid token, so that the
    victim's browser would work in the attacker's account. It has no nonce, or not the
    one in this browser's cookie (which it can neither read nor set)."""
    login_nonce(farm.client)  # the victim once loaded the login page: a cookie is set
    answer = farm.client.post(
        "/login",
        data={"token": farm.admin_token, "next": "/jobs", "login_nonce": nonce},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert "expired or was sent from another site" in answer.text
    assert sessions.SESSION_COOKIE not in farm.client.cookies
    # The page it answers with is a fresh form that works.
    retried = farm.client.post(
        "/login",
        data={"token": farm.admin_token, "login_nonce": login_nonce(farm.client)},
        follow_redirects=False,
    )
    assert retried.status_code == 303
    assert sessions.SESSION_COOKIE in farm.client.cookies


def test_a_login_post_without_the_cookie_is_refused(farm: Farm) -> None:
    nonce = login_nonce(farm.client)
    farm.client.cookies.clear()  # e.g. posted from a page whose request carried no cookie
    answer = farm.client.post(
        "/login", data={"token": farm.admin_token, "login_nonce": nonce}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert sessions.SESSION_COOKIE not in farm.client.cookies


def test_cookie_reads_freely_but_writes_only_with_csrf(farm: Farm) -> None:
    csrf = sign_in(farm)
    assert farm.client.get("/api/jobs").status_code == 200
    no_csrf = farm.client.post("/api/tokens", json={"name": "x"})
    assert no_csrf.status_code == 403
    assert "X-CSRF-Token" in no_csrf.json()["detail"]
    wrong = farm.client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "no"})
    assert wrong.status_code == 403
    # A wrong nonce is a page older than its session: its user is told to reload it, not
    # about a header the page did send.
    assert "reload the page" in wrong.json()["detail"]
    assert "header" not in wrong.json()["detail"]
    ok = farm.client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    assert farm.client.delete(f"/api/jobs/{job_id}").status_code == 403


def test_bearer_needs_no_csrf_and_wins_over_the_cookie(farm: Farm) -> None:
    sign_in(farm)
    other = make_user(farm, "bob")
    answer = farm.client.post("/api/tokens", json={"name": "script"}, headers=bearer(other))
    assert answer.status_code == 201, answer.text
    mine = farm.client.get("/api/tokens", headers=bearer(other)).json()
    assert {t["name"] for t in mine} == {"first token", "script"}, "bob's, not the admin's"


def test_forged_or_stale_cookie_is_401(farm: Farm) -> None:
    farm.client.cookies.set(sessions.SESSION_COOKIE, "v1.e30.AAAA")
    assert farm.client.get("/api/jobs").status_code == 401
    assert farm.client.get("/", follow_redirects=False).status_code == 303


def test_pages_need_a_session_and_carry_the_csrf_nonce(farm: Farm) -> None:
    answer = farm.client.get("/runners", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/runners"
    csrf = sign_in(farm)
    for path in ("/", "/submit", "/runners", "/account"):
        page = farm.client.get(path)
        assert page.status_code == 200, path
        assert csrf in page.text
        assert "Content-Security-Policy" in page.headers
    assert farm.client.get("/static/app.js").status_code == 200
    assert farm.client.get("/static/../routes.py").status_code == 404


def test_runners_page_is_for_admins_and_jobs_stay_private(farm: Farm) -> None:
    bob = make_user(farm, "bob")
    admins_job = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    sign_in(farm, bob)
    assert farm.client.get("/runners").status_code == 403
    assert farm.client.get(f"/jobs/{admins_job}").status_code == 404
    assert farm.client.get(f"/api/jobs/{admins_job}").status_code == 404
    assert farm.client.get("/api/jobs").json() == []


def test_logout_needs_the_nonce(farm: Farm) -> None:
    csrf = sign_in(farm)
    assert farm.client.post("/logout", data={"csrf": "x"}).status_code == 403
    answer = farm.client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    assert sessions.SESSION_COOKIE not in farm.client.cookies


# -------------------------------------------------------------------------- tokens


def test_api_tokens_are_shown_once_and_can_be_revoked(farm: Farm) -> None:
    created = farm.client.post("/api/tokens", headers=farm.admin, json={"name": "ci"}).json()
    secret, token_id = created["secret"], created["token"]["id"]
    assert secret.startswith("fh_api_")
    listed = farm.client.get("/api/tokens", headers=farm.admin).json()
    assert "secret" not in json.dumps(listed) and secret not in json.dumps(listed)
    assert farm.client.get("/api/jobs", headers=bearer(secret)).status_code == 200
    revoked = farm.client.delete(f"/api/tokens/{token_id}", headers=farm.admin)
    assert revoked.json()["revoked_at"] is not None
    assert farm.client.get("/api/jobs", headers=bearer(secret)).status_code == 401


def _browser(farm: Farm) -> TestClient:
    """Another browser on the same manager, starting with no cookies."""
    return TestClient(farm.client.app)


def _token_sign_in(browser: TestClient, token: str) -> str:
    """Sign `browser` in with `token` on the web login form; the session's CSRF nonce."""
    answer = browser.post(
        "/login",
        data={"token": token, "next": "/", "login_nonce": login_nonce(browser)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    csrf: str = browser.get("/api/auth/me").json()["csrf"]
    return csrf


def test_revoking_a_token_ends_the_browser_sessions_made_with_it(farm: Farm) -> None:
    """A leaked token signed into the web UI: revoking it locks the holder out of that
    browser session too (which could otherwise read the jobs and mint new tokens for
    12 hours), while the owner's other sessions go on."""
    bob = make_user(farm, "bob")
    job = submit_stand_in(farm.client, bearer(bob), name="bob's")
    leaked = farm.client.post("/api/tokens", headers=bearer(bob), json={"name": "laptop"}).json()
    thief, owner = _browser(farm), _browser(farm)
    thief_csrf = _token_sign_in(thief, leaked["secret"])
    _token_sign_in(owner, bob)  # the owner's own session, made with another token
    assert [j["id"] for j in thief.get("/api/jobs").json()] == [job]

    revoked = farm.client.delete(f"/api/tokens/{leaked['token']['id']}", headers=bearer(bob))
    assert revoked.status_code == 200, revoked.text

    assert thief.get("/api/auth/me").status_code == 401
    assert thief.get("/api/jobs").status_code == 401
    minted = thief.post(
        "/api/tokens", json={"name": "persist"}, headers={"X-CSRF-Token": thief_csrf}
    )
    assert minted.status_code == 401, "no new token from the dead session"
    page = thief.get("/account", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=/account")
    assert owner.get("/api/auth/me").json()["user"]["name"] == "bob", "other sessions go on"
    assert owner.get("/api/jobs").status_code == 200


def test_a_token_session_stays_dead_when_the_tokens_id_is_reused(farm: Farm) -> None:
    """SQLite hands a deleted row's id to the next row of `api_tokens`: a cookie made with
    the revoked token must not come back to life for the new token of that id."""
    bob = make_user(farm, "bob")
    old = farm.client.post("/api/tokens", headers=bearer(bob), json={"name": "old"}).json()
    browser = _browser(farm)
    _token_sign_in(browser, old["secret"])
    farm.client.delete(f"/api/tokens/{old['token']['id']}", headers=bearer(bob))
    with sqlite3.connect(farm.data_dir / "farmhand.sqlite3") as database:
        database.execute("DELETE FROM api_tokens WHERE id = ?", (old["token"]["id"],))
    new = farm.client.post("/api/tokens", headers=bearer(bob), json={"name": "new"}).json()
    assert new["token"]["id"] == old["token"]["id"], "the id was given out again"
    assert browser.get("/api/auth/me").status_code == 401


def test_a_token_session_keeps_its_token_across_a_password_change(farm: Farm) -> None:
    """The fresh cookie a password change gives the browser is still tied to the token
    the session was made with."""
    created = farm.client.post(
        "/api/admin/users",
        headers=farm.admin,
        json={"name": "ana", "email": "ana@example.com", "password": "correct horse"},
    ).json()
    token = farm.client.post(
        "/api/tokens", headers=bearer(created["token"]), json={"name": "t"}
    ).json()
    browser = _browser(farm)
    csrf = _token_sign_in(browser, token["secret"])
    changed = browser.post(
        "/api/auth/password",
        json={"old_password": "correct horse", "new_password": "a brand new one"},
        headers={"X-CSRF-Token": csrf},
    )
    assert changed.status_code == 200, changed.text
    assert browser.get("/api/auth/me").status_code == 200
    farm.client.delete(f"/api/tokens/{token['token']['id']}", headers=bearer(created["token"]))
    assert browser.get("/api/auth/me").status_code == 401


def test_nobody_revokes_someone_elses_token(farm: Farm) -> None:
    bob = make_user(farm, "bob")
    admin_tokens = farm.client.get("/api/tokens", headers=farm.admin).json()
    answer = farm.client.delete(f"/api/tokens/{admin_tokens[0]['id']}", headers=bearer(bob))
    assert answer.status_code == 404
    assert farm.client.post("/api/tokens", headers=farm.admin, json={}).status_code == 400


def test_admin_creates_users_others_cannot(farm: Farm) -> None:
    bob = make_user(farm, "bob")
    users = farm.client.get("/api/admin/users", headers=farm.admin).json()
    assert {u["name"] for u in users} == {"admin", "bob"}
    again = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": "bob"})
    assert again.status_code == 409
    bad = farm.client.post("/api/admin/users", headers=farm.admin, json={"name": "../x"})
    assert bad.status_code == 400
    role = farm.client.post(
        "/api/admin/users", headers=farm.admin, json={"name": "eve", "role": "root"}
    )
    assert role.status_code == 400
    assert farm.client.get("/api/admin/users", headers=bearer(bob)).status_code == 403
    answer = farm.client.post("/api/admin/users", headers=bearer(bob), json={"name": "mallory"})
    assert answer.status_code == 403


def test_registration_tokens_register_runners_until_revoked(farm: Farm) -> None:
    created = farm.client.post(
        "/api/admin/runner-tokens", headers=farm.admin, json={"expires_in_hours": 1}
    ).json()
    secret = created["secret"]
    assert created["command"] == (f"farmhand worker --manager http://testserver --token {secret}")
    register = {"token": secret, "name": "box"}
    assert farm.client.post("/api/runner/register", json=register).status_code == 201
    listed = farm.client.get("/api/admin/runner-tokens", headers=farm.admin).json()
    mine = next(t for t in listed if t["id"] == created["token"]["id"])
    assert mine["uses"] == 1 and mine["active"]
    farm.client.delete(f"/api/admin/runner-tokens/{mine['id']}", headers=farm.admin)
    assert farm.client.post("/api/runner/register", json=register).status_code == 401
    bob = make_user(farm, "bob")
    assert (
        farm.client.post("/api/admin/runner-tokens", headers=bearer(bob), json={}).status_code
        == 403
    )
    assert farm.client.delete("/api/admin/runner-tokens/999", headers=farm.admin).status_code == 404


# -------------------------------------------------------------------------- events


def test_live_events_show_only_what_the_caller_may_see(farm: Farm) -> None:
    make_user(farm, "bob")
    admins_job = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    context: ManagerContext = farm.client.app.state.farm  # type: ignore[attr-defined]
    bob_id = 2
    token = farm.client.post("/api/tokens", headers=farm.admin, json={"name": "x"}).json()
    bobs_job = submit_stand_in(
        farm.client, bearer(token["secret"]), frame_start=1, frame_end=2, chunk_size=2
    )  # another admin job, re-owned below
    with context.db.transaction() as session:
        from farmhand.manager.db.models import Job

        job = session.get(Job, bobs_job)
        assert job is not None
        job.owner_id = bob_id

    async def collect(caller: Caller) -> list[str]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        local = dataclasses.replace(context, events=bus)
        stream = event_stream(local, caller)
        assert isinstance(stream, AsyncGenerator)  # so it can be closed
        got = [await anext(stream)]  # the greeting, sent once subscribed
        bus.job_changed(admins_job)
        bus.job_changed(bobs_job)
        bus.runner_changed(5)
        bus.job_changed(bobs_job)
        for _ in range(2 if caller.role != "admin" else 4):
            got.append(await asyncio.wait_for(anext(stream), 5))
        await stream.aclose()
        return got

    bob_saw = asyncio.run(collect(Caller(bob_id, "bob", "user")))
    assert bob_saw[0].startswith("retry:")
    assert all(f'"job_id":{bobs_job}' in event for event in bob_saw[1:]), bob_saw
    admin_saw = asyncio.run(collect(Caller(1, "admin", "admin")))
    assert any(event.startswith("event: runner") for event in admin_saw)
    assert farm.client.get("/api/events").status_code == 401


# ---------------------------------------------------------------------- thumbnails


def test_thumbnails_are_small_jpegs_for_the_owner_only(farm: Farm) -> None:
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=2, chunk_size=2)
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    big = io.BytesIO()
    Image.new("RGBA", (640, 480), (200, 10, 10, 128)).save(big, format="PNG")
    stored = farm.client.post(
        f"/api/runner/files/{job_id}/upload",
        headers=runner,
        data={"task_id": str(task["task_id"]), "frame": "1"},
        files={"file": ("frame_0001.png", big.getvalue(), "image/png")},
    )
    assert stored.status_code == 201, stored.text
    output = next(
        f
        for f in farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
        if f["kind"] == "output"
    )
    url = f"/api/jobs/{job_id}/files/{output['id']}/thumbnail"
    answer = farm.client.get(url, headers=farm.admin)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as image:
        assert image.size == (256, 192)
    assert farm.client.get(url, headers=farm.admin).content == answer.content, "cached"
    bob = make_user(farm, "bob")
    assert farm.client.get(url, headers=bearer(bob)).status_code == 404
    inputs = farm.client.get(f"/api/jobs/{job_id}/files", headers=farm.admin).json()
    blend = next(f for f in inputs if f["kind"] == "input")
    answer = farm.client.get(
        f"/api/jobs/{job_id}/files/{blend['id']}/thumbnail", headers=farm.admin
    )
    assert answer.status_code == 404, "only outputs have thumbnails"


def test_exr_and_broken_frames_get_a_placeholder(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an image")
    exr = thumbnail(tmp_path / "cache", junk, "a" * 64, "frames/0001.exr")
    broken = thumbnail(tmp_path / "cache", junk, "b" * 64, "frames/0001.png")
    for made in (exr, broken):
        with Image.open(made) as image:
            assert image.format == "JPEG" and max(image.size) <= 256
    assert exr != broken, "EXR says EXR, a broken frame says '?'"


# ---------------------------------------------------------------------- blend info


def test_blend_info_refuses_what_is_not_a_blend(farm: Farm) -> None:
    answer = farm.client.post(
        "/api/blend-info", headers=farm.admin, files={"file": ("x.txt", b"BLENDER", "text/plain")}
    )
    assert answer.status_code == 400
    answer = farm.client.post(
        "/api/blend-info", headers=farm.admin, files={"file": ("x.blend", b"PK\x03\x04", "x/y")}
    )
    assert answer.status_code == 400
    assert "first bytes" in answer.json()["detail"]
    assert farm.client.post("/api/blend-info", headers=farm.admin).status_code == 400


def test_blend_info_without_blender_is_503_and_keeps_the_file(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blendinfo, "blenders", lambda: [])
    answer = farm.client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("nocache.blend", FAKE_BLEND + b"503", "application/octet-stream")},
    )
    assert answer.status_code == 503
    assert "no Blender" in answer.json()["detail"]
    sha = answer.headers[blendinfo.BLOB_HEADER]
    job = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": "a.blend", "files": {"a.blend": sha}, "frame_end": 1},
    )
    assert job.status_code == 202, "the upload can be used for the job as it is"


def test_blend_info_names_the_blender_that_saved_the_file(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which Blender saved the file (its header) besides which one read it, and the
    farm's Blenders: a 5.0 file read by the manager's 4.2 can be told apart."""
    reader = BlenderInstall("executable", "/opt/blender-4.2/blender", "4.2.1")
    monkeypatch.setattr(blendinfo, "blenders", lambda: [reader])
    monkeypatch.setattr(blendinfo, "open_with", lambda install, blend: {"scene": "Scene"})
    answer = farm.client.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": "old-box",
            "capabilities": {"blender_versions": ["3.6.5"]},
        },
    )
    assert answer.status_code == 201, answer.text

    def info(name: str, content: bytes) -> dict[str, object]:
        answer = farm.client.post(
            "/api/blend-info",
            headers=farm.admin,
            files={"file": (name, content, "application/octet-stream")},
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    five = info("five.blend", b"BLENDER17-01v0500" + b"\x00" * 64 + b"five")
    assert (five["saved_with"], five["blender_version"]) == ("5.0", "4.2.1")
    assert five["farm_blenders"] == ["3.6.5", "4.2.1"], "the reader's and the worker's"
    old = info("old.blend", FAKE_BLEND + b"old")
    assert old["saved_with"] == "3.4"
    # A zstd frame that does not decompress: a .blend's first bytes, no version in it.
    garbled = info("garbled.blend", b"\x28\xb5\x2f\xfd" + b"\xff" * 64)
    assert garbled["saved_with"] is None


def test_blend_info_that_blender_cannot_open_names_the_saving_blender(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(install: BlenderInstall, blend: Path) -> dict[str, object]:
        raise blendinfo.SceneReadError("file format is newer")

    reader = BlenderInstall("executable", "/opt/blender-3.4/blender", "3.4.1")
    monkeypatch.setattr(blendinfo, "blenders", lambda: [reader])
    monkeypatch.setattr(blendinfo, "open_with", refuse)
    answer = farm.client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("new.blend", b"BLENDER17-01v0501" + b"\x00" * 64, "x/y")},
    )
    assert answer.status_code == 422
    assert "saved with Blender 5.1" in answer.json()["detail"]
    assert answer.headers[blendinfo.BLOB_HEADER]


@pytest.mark.blender
def test_blend_info_reads_the_scene_with_blender(farm: Farm, animated_blend: Path) -> None:
    answer = farm.client.post(
        "/api/blend-info",
        headers=farm.admin,
        files={"file": ("anim.blend", animated_blend.read_bytes(), "application/octet-stream")},
    )
    assert answer.status_code == 200, answer.text
    info = answer.json()
    assert (info["frame_start"], info["frame_end"]) == (1, 3)
    assert (info["resolution_x"], info["resolution_y"]) == (64, 48)
    assert info["engine"] == "CYCLES" and info["has_camera"]
    assert info["samples"] == 2
    with animated_blend.open("rb") as handle:
        saved = read_saved_version(handle)
    assert saved is not None and info["saved_with"] == saved
    assert info["blender_version"] in info["farm_blenders"]
    job = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": "anim.blend", "files": {"anim.blend": info["sha256"]}},
    )
    assert job.status_code == 202


def test_every_new_route_is_in_the_openapi_schema(farm: Farm) -> None:
    paths = farm.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/admin/users",
        "/api/tokens",
        "/api/tokens/{token_id}",
        "/api/admin/runner-tokens",
        "/api/admin/runner-tokens/{token_id}",
        "/api/blend-info",
        "/api/events",
        "/api/jobs/{job_id}/files/{file_id}/thumbnail",
    ):
        assert path in paths, path
    assert "/login" not in paths, "pages are not API"


@pytest.mark.blender
def test_exr_frames_get_a_real_preview(tmp_path: Path) -> None:
    """An EXR rendered by Blender is shown through a JPEG preview of its pixels."""
    from farmhand.scenes import make_scene
    from farmhand.worker.blender.discovery import find_blender
    from farmhand.worker.blender.process import RenderRequest, render

    install = find_blender("bpy")
    blend = make_scene(tmp_path / "s.blend", "animated", install=install, width=64, height=48)
    result = render(
        install,
        RenderRequest(blend, [1], tmp_path / "out", output_format="OPEN_EXR"),
        log_path=tmp_path / "log.txt",
    )
    assert result.ok, result.error
    exr = result.frames[1]
    made = thumbnail(tmp_path / "cache", exr, "c" * 64, "frames/0001.exr", size=32)
    with Image.open(made) as image:
        assert image.size == (32, 24)
        colours = image.convert("RGB").getcolors(maxcolors=32 * 24)
    assert colours is not None and len(colours) > 10, "a picture, not a flat placeholder"
    big = thumbnail(tmp_path / "cache", exr, "c" * 64, "frames/0001.exr", size=1600)
    with Image.open(big) as image:
        assert image.size == (64, 48), "never enlarged past the frame itself"
