"""Zips of packed projects: stored as a job manifest, hostile entries refused."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from farmhand.manager.api import blendinfo
from farmhand.worker.blender.discovery import BlenderInstall
from tests.integration.conftest import FAKE_BLEND, Farm, png_bytes


def make_zip(entries: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def upload(farm: Farm, data: bytes, name: str = "project.zip"):  # type: ignore[no-untyped-def]
    return farm.client.post(
        "/api/projects",
        headers=farm.admin,
        files={"file": (name, data, "application/zip")},
    )


def test_a_packed_project_becomes_a_job_manifest(farm: Farm) -> None:
    texture = png_bytes(4, 4, "blue")
    answer = upload(
        farm,
        make_zip(
            {
                "shot/scene.blend": FAKE_BLEND,
                "shot/textures/wood.png": texture,
                "shot/lib/props.blend": FAKE_BLEND + b"lib",
                "__MACOSX/shot/._scene.blend": b"junk",
            }
        ),
    )
    assert answer.status_code == 200, answer.text
    project = answer.json()
    assert set(project["files"]) == {
        "shot/scene.blend",
        "shot/textures/wood.png",
        "shot/lib/props.blend",
    }, "macOS resource forks are left out"
    assert project["blend_files"] == ["shot/scene.blend", "shot/lib/props.blend"]
    assert project["main_file"] == "shot/scene.blend", "the shallowest .blend leads"
    assert project["info"] is None and "could not be read" in project["info_error"]

    job = farm.client.post(
        "/api/jobs",
        headers=farm.admin,
        json={"main_file": project["main_file"], "files": project["files"], "frame_end": 1},
    )
    assert job.status_code == 202, job.text
    runner = farm.register_runner()
    task = farm.client.get("/api/runner/tasks", params={"wait": 0}, headers=runner).json()
    assert {f["path"] for f in task["files"]} == set(project["files"])
    got = farm.client.get(
        f"/api/runner/files/{task['job_id']}/shot/textures/wood.png", headers=runner
    )
    assert got.content == texture


@pytest.mark.parametrize(
    ("entries", "link", "fragment"),
    [
        ({"../../etc/cron.d/evil": b"x", "a.blend": FAKE_BLEND}, None, "must not contain"),
        ({"/etc/passwd": b"x", "a.blend": FAKE_BLEND}, None, "must be relative"),
        ({"C:/Windows/evil.dll": b"x", "a.blend": FAKE_BLEND}, None, "forbidden character"),
        ({"a.blend": FAKE_BLEND}, "textures/link.png", "is a link"),
        ({"readme.txt": b"no blend here"}, None, "no .blend"),
        ({"a.blend": FAKE_BLEND, "bomb.bin": b"\0" * (8 << 20)}, None, "zip bomb"),
    ],
)
def test_hostile_zips_are_refused_and_nothing_is_stored(
    farm: Farm, entries: dict[str, bytes], link: str | None, fragment: str
) -> None:
    before = set((farm.data_dir / "blobs" / "sha256").rglob("*"))
    answer = upload(farm, make_zip(entries, link=link))
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["detail"]
    assert set((farm.data_dir / "blobs" / "sha256").rglob("*")) == before


def test_not_a_zip(farm: Farm) -> None:
    assert upload(farm, b"PK\x03\x04 but not really").status_code == 400
    assert upload(farm, make_zip({"a.blend": FAKE_BLEND}), name="a.tar").status_code == 400
    assert farm.client.post("/api/projects", files={"file": ("p.zip", b"x")}).status_code == 401


def test_a_projects_scene_info_names_the_farms_blenders(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zipped project's submit form warns about a too-new .blend as a single file's
    does: its scene info carries the farm's Blenders too."""
    reader = BlenderInstall("executable", "/opt/blender-4.2/blender", "4.2.1")
    monkeypatch.setattr(blendinfo, "blenders", lambda: [reader])
    monkeypatch.setattr(blendinfo, "open_with", lambda install, blend: {"scene": "Scene"})
    farm.client.post(
        "/api/runner/register",
        json={
            "token": farm.runner_token,
            "name": "old-box",
            "capabilities": {"blender_versions": ["3.6.5"]},
        },
    )
    five = b"BLENDER17-01v0500" + b"\x00" * 64 + b"zipped"
    answer = upload(farm, make_zip({"shot/scene.blend": five}))
    assert answer.status_code == 200, answer.text
    info = answer.json()["info"]
    assert info["saved_with"] == "5.0"
    assert info["farm_blenders"] == ["3.6.5", "4.2.1"]
