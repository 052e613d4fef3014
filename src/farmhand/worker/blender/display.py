"""A job's scene open in Blender, showing pictures through the scene's colour management.

A video of OpenEXR frames must look like Blender's own PNG frames of the scene, and only
Blender applies the scene's view transform, look, exposure, gamma and curves exactly,
with its own OpenColorIO configuration (Filmic in 3.4, AgX in 4 and 5). So the video
task opens the job's .blend in a Blender of the worker's and, for each frame, hands it
the picture through two files in the task's folder (raw floats in, raw floats out; a
4K frame is about 130 MB each way, so one at a time, reused): the driver's `display`
command saves the picture as Blender saves a render and reads back what it wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from farmhand.shared.images import ImageError
from farmhand.worker.blender.events import Displayed, DriverError, Opened
from farmhand.worker.blender.process import BlenderProcess, describe_exit
from farmhand.worker.video import SceneUnavailable


class BlenderSceneLook:
    """One Blender with the job's .blend open, for one video task (`SceneLook`)."""

    def __init__(
        self,
        process: BlenderProcess,
        version: str,
        facts: dict[str, object],
        folder: Path,
        log_path: Path,
        on_log: Callable[[str], None],
        cancel: threading.Event,
    ) -> None:
        self.process = process
        self.facts = facts
        self.version = version
        self.folder = folder
        self.log_path = log_path
        self.on_log = on_log
        self.cancel = cancel

    @classmethod
    def open(
        cls,
        process: BlenderProcess,
        version: str,
        blend: Path,
        folder: Path,
        log_path: Path,
        on_log: Callable[[str], None],
        cancel: threading.Event,
    ) -> BlenderSceneLook:
        """`blend` opened in `process`; SceneUnavailable (the process closed) if it is not."""
        folder.mkdir(parents=True, exist_ok=True)
        answer = process.ask(
            {"cmd": "open", "blend": str(blend)}, log_path=log_path, on_log=on_log, cancel=cancel
        )
        if isinstance(answer, Opened):
            return cls(process, version, answer.facts, folder, log_path, on_log, cancel)
        process.close()
        if isinstance(answer, DriverError):
            raise SceneUnavailable(f"Blender {version} cannot open it: {answer.message}")
        raise SceneUnavailable(f"Blender {version} ended while opening it")

    @property
    def view_layer(self) -> str | None:
        layer = self.facts.get("view_layer")
        return layer if isinstance(layer, str) and layer else None

    @property
    def description(self) -> str:
        view = self.facts.get("view") or "its colour management"
        layer = self.view_layer
        shown = f", view layer {layer} first" if layer else ""
        return f"Blender {self.version}: {view}{shown}"

    def display(self, linear: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """`linear` as the scene shows it (display values 0-1, height x width x 3).

        Blender keeps pixels bottom row first and as RGBA; the picture is opaque, as the
        video is (alpha would only be dropped by its yuv420p)."""
        height, width = linear.shape[:2]
        source, target = self.folder / "linear.f32", self.folder / "shown.f32"
        rgba = np.ones((height, width, 4), dtype=np.float32)
        rgba[:, :, :3] = linear[::-1]
        rgba.tofile(source)
        answer = self.process.ask(
            {
                "cmd": "display",
                "source": str(source),
                "target": str(target),
                "width": width,
                "height": height,
            },
            log_path=self.log_path,
            on_log=self.on_log,
            cancel=self.cancel,
        )
        if isinstance(answer, Displayed):
            shown = np.fromfile(target, dtype=np.float32)
            if shown.size != height * width * 4:
                raise ImageError("Blender showed the picture at another size")
            return shown.reshape(height, width, 4)[::-1, :, :3]
        if isinstance(answer, DriverError):
            raise ImageError(f"Blender could not show it as the scene does: {answer.message}")
        if self.cancel.is_set():
            raise ImageError("canceled")
        code = self.process.process.poll()
        ended = describe_exit(code) if code is not None else "Blender stopped answering"
        raise ImageError(f"{ended} while showing it as the scene does")

    def close(self) -> None:
        """Quit the Blender (killed if it does not quit at once)."""
        self.process.close()
