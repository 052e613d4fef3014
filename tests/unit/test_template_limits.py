"""An output template's format spec is bounded before anything is formatted: one
`{frame:>999999999}` made the manager build a 1 GB name (5 GB of memory, 26 s) and send
it back in the error. Also the CLI, which checks templates with the same code."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from farmhand.cli import jobs_cmd
from farmhand.cli.app import app
from farmhand.client import FarmhandClient
from farmhand.shared.outputnames import OutputName, TemplateError, check_template, render

HUGE = [
    ("{frame:>10000000}", "width 10000000"),
    ("{frame:010000000d}.{ext}", "width 10000000"),
    ("{job}/{frame:.10000000f}", "precision 10000000"),
    ("{frame:x^10000000,}", "width 10000000"),
    ("{frame:.10000000g}", "precision 10000000"),  # is "1", through a 10 MB buffer
    # Python reads any script's digits: a width in Arabic-Indic digits (50000000).
    ("{frame:" + "\u0665" + "\u0660" * 7 + "}", "width 50000000"),
]


@pytest.mark.parametrize(("template", "said"), HUGE)
def test_a_huge_width_or_precision_is_refused_without_formatting(template: str, said: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as refused:
            check_template(template)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert said in str(refused.value) and "over 1024" in str(refused.value)
    assert len(str(refused.value)) < 200
    assert peak < 1_000_000, f"{peak} bytes: the name was built"


def test_a_name_that_is_too_long_is_quoted_only_in_part() -> None:
    with pytest.raises(TemplateError) as refused:
        check_template("{frame:1000}{frame:1000}{frame:1000}.{ext}")
    message = str(refused.value)
    assert "(3004 characters)" in message and "1 to 1024 characters" in message
    assert len(message) < 300


def test_ordinary_specs_still_name_frames() -> None:
    name = OutputName(job="Shot", job_id=7, frame=12, ext="png", task=3)
    for template, expected in [
        ("{frame:04d}.{ext}", "0012.png"),
        ("{frame:_>6}.{ext}", "____12.png"),
        ("{job_id:+}-{frame:x}.{ext}", "+7-c.png"),
        ("{frame:0250d}", "0" * 248 + "12"),
    ]:
        assert render(check_template(template), name) == expected


def test_a_spec_python_would_refuse_is_refused() -> None:
    with pytest.raises(TemplateError, match="not a format spec"):
        check_template("{frame:99<5}")
    with pytest.raises(TemplateError, match="Unknown format code"):
        check_template("{frame:q}")


# ---------------------------------------------------------------- the CLI, same check


def test_submit_refuses_a_huge_output_template_before_connecting(tmp_path: Path) -> None:
    blend = tmp_path / "a.blend"
    blend.write_bytes(b"x")
    result = CliRunner().invoke(
        app,
        ["submit", str(blend), "--output-template", "{frame:>999999999}", "--token", "t",
         "--url", "http://127.0.0.1:9"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "width 999999999 is over 1024" in result.output
    assert len(result.output) < 1000


def test_download_refuses_a_huge_template_before_fetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[str] = []
    job = {"id": 3, "name": "shot", "owner": "a", "status": "completed", "priority": 50,
           "progress": 100.0, "frames_done": 1, "frames_total": 1,
           "created_at": "2026-11-23T10:00:00Z", "started_at": None, "finished_at": None,
           "settings": {"frame_start": 1, "frame_end": 1}, "main_file": "shot.blend",
           "tasks": [], "elapsed_seconds": None, "eta_seconds": None}  # fmt: skip
    files = [{"id": 7, "kind": "output", "path": "frames/0001.png", "size": 3,
              "sha256": "7" * 64, "frame": 1}]  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        if request.url.path == "/api/jobs/3/files":
            return httpx.Response(200, json=files)
        if request.url.path == "/api/jobs/3":
            return httpx.Response(200, json=job)
        return httpx.Response(200, content=b"png")

    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(
        jobs_cmd,
        "open_client",
        lambda url, token: FarmhandClient("http://m.test", "t", transport=transport),
    )
    result = CliRunner().invoke(
        app, ["download", "3", "--template", "{frame:0100000000d}", "-o", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "width 100000000 is over 1024" in result.output
    assert not any("download" in path for path in fetched), "no file was fetched"
