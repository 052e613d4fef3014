"""A job's settings in words: the line the job page and `farmhand job` show."""

from __future__ import annotations

from farmhand.shared.schemas import JobSettings, TileGrid, VideoSettings
from farmhand.shared.settings_text import settings_line


def test_a_plain_job_asks_for_nothing_more() -> None:
    assert settings_line(JobSettings(frame_start=1, frame_end=250, priority=80)) == ""


def test_every_choice_is_named_in_one_line() -> None:
    settings = JobSettings(
        device="OPTIX",
        required_tags=["gpu", "studio-b"],
        blender_version=">=4.2,<5",
        max_workers=1,
        tiles=TileGrid(columns=4, rows=2),
        output_format="OPEN_EXR_MULTILAYER",
        video=VideoSettings(codec="vp9", container="webm", fps=23.976, crf=0),
        max_attempts=5,
        storage="shared",
    )
    assert settings_line(settings) == (
        "OPTIX workers only · tags: gpu, studio-b · Blender >=4.2,<5 · "
        "at most 1 worker at once · each frame in 4x2 tiles · OpenEXR multilayer · "
        "video: vp9 in webm, 23.976 fps, crf 0 · 5 attempts a task · on shared storage"
    )


def test_a_video_at_the_scenes_rate_names_only_what_was_chosen() -> None:
    line = settings_line(JobSettings(video=VideoSettings(), max_workers=3))
    assert line == "at most 3 workers at once · video: h264 in mp4"


def test_one_attempt_is_said_in_the_singular() -> None:
    assert settings_line(JobSettings(max_attempts=1)) == "1 attempt a task"
