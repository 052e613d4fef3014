"""A job's settings in words, for people: the names the web pages give to formats,
devices and codecs, and the line the job page and `farmhand job` both show, made here
once (the manager sends it as `JobDetail.settings_line`)."""

from __future__ import annotations

from farmhand.shared.schemas import JobSettings

FORMAT_LABELS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "OPEN_EXR": "OpenEXR",
    "OPEN_EXR_MULTILAYER": "OpenEXR multilayer",
}
"""Readable names of the `OutputFormat`s; a format missing here is shown as spelled."""
DEVICE_LABELS = {
    "CPU": "CPU",
    "CUDA": "CUDA (NVIDIA)",
    "OPTIX": "OptiX (NVIDIA RTX)",
    "HIP": "HIP (AMD)",
    "ONEAPI": "oneAPI (Intel)",
    "METAL": "Metal (Apple)",
}
"""Readable names of the `DeviceKind`s, as the add-on shows them; a kind missing here is
shown as it is spelled."""
CODEC_LABELS = {"h264": "H.264", "h265": "H.265 (HEVC)", "vp9": "VP9"}
CONTAINER_LABELS = {
    "mp4": "MP4 (.mp4)",
    "mkv": "Matroska (.mkv)",
    "mov": "QuickTime (.mov)",
    "webm": "WebM (.webm)",
}


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
        parts.append(
            f"{settings.max_attempts} attempt{'' if settings.max_attempts == 1 else 's'} a task"
        )
    if settings.storage == "shared":
        parts.append("on shared storage")
    return " · ".join(parts)
