"""Shared-storage path variables (both ways) and output name templates."""

from __future__ import annotations

import pytest

from farmhand.shared.outputnames import OutputName, TemplateError, check_template, render
from farmhand.shared.pathmap import (
    PathMapError,
    check_variables,
    merged,
    parse_path_maps,
    remap_pairs,
    to_local,
    to_neutral,
)

SHARE = {
    "projects": {"linux": "/mnt/projects", "windows": "P:\\", "darwin": "/Volumes/projects"},
    "cache": {"linux": "/mnt/projects/cache", "windows": "\\\\nas\\cache"},
}


@pytest.mark.parametrize(
    ("submitted", "neutral"),
    [
        ("/mnt/projects/shot-010/scene.blend", "{projects}/shot-010/scene.blend"),
        ("P:\\shot-010\\scene.blend", "{projects}/shot-010/scene.blend"),
        ("p:/shot-010/scene.blend", "{projects}/shot-010/scene.blend"),
        ("/Volumes/projects/shot-010/scene.blend", "{projects}/shot-010/scene.blend"),
        ("/mnt/projects/cache/sim.vdb", "{cache}/sim.vdb"),  # the longest root wins
        ("\\\\NAS\\cache\\sim.vdb", "{cache}/sim.vdb"),
        ("{projects}/shot-010/scene.blend", "{projects}/shot-010/scene.blend"),
        ("/mnt/projects", "{projects}"),
    ],
)
def test_paths_from_any_platform_become_neutral(submitted: str, neutral: str) -> None:
    assert to_neutral(submitted, SHARE) == neutral


@pytest.mark.parametrize(
    ("platform", "local"),
    [
        ("linux", "/mnt/projects/shot-010/scene.blend"),
        ("windows", "P:\\shot-010\\scene.blend"),
        ("darwin", "/Volumes/projects/shot-010/scene.blend"),
    ],
)
def test_neutral_paths_become_each_platforms_own(platform: str, local: str) -> None:
    assert to_local("{projects}/shot-010/scene.blend", platform, SHARE) == local
    assert to_neutral(local, SHARE) == "{projects}/shot-010/scene.blend", "and back"


@pytest.mark.parametrize(
    "bad",
    [
        "/mnt/projectsX/scene.blend",  # a prefix, but not on a folder boundary
        "/home/me/scene.blend",
        "/mnt/projects/../../etc/passwd",
        "{projects}/../secret.blend",
        "relative/scene.blend",
    ],
)
def test_paths_off_the_share_or_climbing_out_are_refused(bad: str) -> None:
    with pytest.raises(PathMapError):
        to_neutral(bad, SHARE)


def test_a_platform_without_a_root_says_how_to_add_one() -> None:
    with pytest.raises(PathMapError, match="--path-map projects:studio-b=ROOT"):
        to_local("{projects}/a.blend", "studio-b", SHARE)


def test_worker_flags_add_to_and_override_the_managers_table() -> None:
    own = parse_path_maps(["linux=/srv/share", "projects:linux=/data/projects"])
    assert own == {"shared": {"linux": "/srv/share"}, "projects": {"linux": "/data/projects"}}
    table = merged(SHARE, own)
    assert to_local("{projects}/a.blend", "linux", table) == "/data/projects/a.blend"
    assert to_local("{projects}/a.blend", "windows", table) == "P:\\a.blend"


@pytest.mark.parametrize(
    "bad",
    [
        {"Projects": {"linux": "/p"}},
        {"p": {"linux": "relative"}},
        {"p": {}},
        {"p": {"Li nux": "/p"}},
    ],
)
def test_bad_variable_tables_are_refused(bad: dict[str, dict[str, str]]) -> None:
    with pytest.raises(PathMapError):
        check_variables(bad)


def test_bad_path_map_flags_are_refused() -> None:
    with pytest.raises(PathMapError, match="PLATFORM=ROOT"):
        parse_path_maps(["/mnt/projects"])


def test_output_template_names_frames() -> None:
    name = OutputName(job="Shot 10/final", job_id=7, frame=12, ext="png", task=3)
    assert render("{job}/{frame:04d}.{ext}", name) == "Shot 10_final/0012.png"
    assert render("job{job_id:03d}/t{task}/f{frame:05d}.{ext}", name) == "job007/t3/f00012.png"


@pytest.mark.parametrize(
    "hostile",
    [
        "../{frame}.{ext}",
        "/etc/{frame}",
        "C:/{frame}.{ext}",
        "a/../../{frame}",
        "{job.__class__.__name__}{frame}",
        "{job[0]}{frame}",
        "{frame!r}",
        "{secret}{frame}",
        "{job:>{frame}}{frame}",
        "{job}.{ext}",  # no {frame}: every frame would overwrite the last
        "{frame}\\..\\x",
        "",
        "{",
    ],
)
def test_hostile_or_broken_templates_are_refused(hostile: str) -> None:
    with pytest.raises(TemplateError):
        check_template(hostile)


def test_a_job_name_cannot_climb_out_through_the_template() -> None:
    name = OutputName(job="../../etc", job_id=1, frame=1, ext="png")
    assert render("{job}/{frame}.{ext}", name) == "_.._etc/1.png"  # one harmless folder


def test_remap_pairs_lead_from_every_other_root_to_this_platforms() -> None:
    assert remap_pairs(SHARE, "linux") == [
        ("/Volumes/projects", "/mnt/projects"),
        ("\\\\nas\\cache", "/mnt/projects/cache"),
        ("P:\\", "/mnt/projects"),
    ]
    assert remap_pairs(SHARE, "studio-b") == [], "no root here: nothing to rewrite to"
