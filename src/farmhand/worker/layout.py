"""Where a task's files are on this worker when they live on shared storage.

A shared-storage task names its .blend as `{variable}/…`; this worker maps that to its
own platform's root (`farmhand.shared.pathmap`) and hands Blender the mapped path, so
the .blend's relative paths (`//textures/wood.png`) resolve on the share too.

Frames are rendered into the worker's local output folder as always, then copied into
the job's `output_dir` on the share (named by the job's output template) and uploaded
to the manager as well: the manager's copy is what downloads, the zip, thumbnails and
the video use, and what proves the task complete. A tiled still's tiles are not frames:
they only go to the manager, and its `merge` task writes the merged frame here.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path

import structlog
from structlog.typing import FilteringBoundLogger

from farmhand.shared.outputnames import DEFAULT_SHARED_TEMPLATE, OutputName, TemplateError, render
from farmhand.shared.pathmap import PathMapError, merged, to_local
from farmhand.shared.schemas import TaskAssignment

log: FilteringBoundLogger = structlog.get_logger(__name__)


class SharedStorageError(Exception):
    """The share is not mapped on this worker, or a file on it is missing."""


def path_table(
    task: TaskAssignment, own: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """The manager's roots with this worker's `--path-map` entries on top."""
    return merged(task.path_variables, own)


def shared_blend(task: TaskAssignment, platform: str, own: Mapping[str, Mapping[str, str]]) -> Path:
    """The task's .blend as a path on this machine; it must exist."""
    try:
        local = Path(to_local(task.main_file, platform, path_table(task, own)))
    except PathMapError as error:
        raise SharedStorageError(str(error)) from error
    if not local.is_file():
        raise SharedStorageError(
            f"{task.main_file} is {local} on this worker ({platform}), and there is no file there"
        )
    return local


class SharedOutputs:
    """Copies each saved frame into the job's output folder on the share.

    Called from the renderer's thread for a render task's frames, and by a `merge` task
    for the frame it merged from a still's tiles (never for a tile, which would take the
    frame's name); a failure is kept and turns the task into a failure at the end (a
    frame missing on the share is not a finished task).
    """

    def __init__(
        self, task: TaskAssignment, platform: str, own: Mapping[str, Mapping[str, str]]
    ) -> None:
        assert task.output_dir is not None
        try:
            self.root = Path(to_local(task.output_dir, platform, path_table(task, own)))
        except PathMapError as error:
            raise SharedStorageError(f"output_dir: {error}") from error
        self.task = task
        self.template = task.output_template or DEFAULT_SHARED_TEMPLATE
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def target(self, frame: int, source: Path) -> Path:
        name = OutputName(
            job=self.task.job_name,
            job_id=self.task.job_id,
            frame=frame,
            ext=source.suffix.lstrip(".").lower(),
            task=self.task.task_id,
        )
        return self.root / render(self.template, name)

    def publish(self, frame: int, source: Path) -> None:
        try:
            target = self.target(frame, source)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            log.info("frame written to shared storage", frame=frame, path=str(target))
        except (OSError, TemplateError) as error:
            with self._lock:
                self.errors.append(f"frame {frame}: {error}")
            log.error("cannot write frame to shared storage", frame=frame, error=str(error))
