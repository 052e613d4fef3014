"""A job's settings in words, for people: the web job page and `farmhand job` show the
same line, made here once (the manager sends it as `JobDetail.settings_line`)."""

from __future__ import annotations

from farmhand.shared.schemas import JobSettings

FORMAT_LABELS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "OPEN_EXR": "OpenEXR",
    "OPEN_EXR_MULTILAYER": "OpenEXR multilayer",
}
"""Readable names of the `OutputFormat`s; a format missing here is shown as spelled."""


def settings_line(settings: JobSettings) -> str:
    """What the job asked for beyond its frames and priority: which workers may take it
    and what it makes; empty when it asked for nothing more.

    `CPU workers only · at most 2 workers at once · video: h265 in mkv, 12 fps`
    """
    parts = []
    if settings.device:
        parts.append(f"{settings.device} workers only")
    if settings.required_tags:
        parts.append(f"tags: {', '.join(settings.required_tags)}")
    if settings.blender_version:
        parts.append(f"Blender {settings.blender_version}")
    if settings.max_workers:
        plural = "" if settings.max_workers == 1 else "s"
        parts.append(f"at most {settings.max_workers} worker{plural} at once")
    if settings.tiles:
        parts.append(f"each frame in {settings.tiles.columns}x{settings.tiles.rows} tiles")
    if settings.output_format:
        parts.append(FORMAT_LABELS.get(settings.output_format, settings.output_format))
    if settings.video:
        video = settings.video
        words = f"video: {video.codec} in {video.container}"
        if video.fps:
            words += f", {video.fps:g} fps"
        if video.crf is not None:
            words += f", crf {video.crf}"
        parts.append(words)
    if settings.max_attempts:
        parts.append(f"{settings.max_attempts} attempts a task")
    if settings.storage == "shared":
        parts.append("on shared storage")
    return " · ".join(parts)
