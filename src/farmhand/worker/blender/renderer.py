"""The worker's real renderer: a task rendered by Blender through the driver."""

from __future__ import annotations

from farmhand.worker.agent import RenderJob, RenderOutcome, TaskRenderer
from farmhand.worker.blender.discovery import BlenderInstall
from farmhand.worker.blender.events import Event, FrameStarted
from farmhand.worker.blender.process import RenderRequest, render


def blender_task_renderer(install: BlenderInstall) -> TaskRenderer:
    def render_task(job: RenderJob) -> RenderOutcome:
        task = job.task

        def on_event(event: Event) -> None:
            if isinstance(event, FrameStarted):
                job.on_frame_started(event.frame)

        result = render(
            install,
            RenderRequest(
                blend_path=job.blend_file,
                frames=task.frames,
                output_dir=job.output_dir,
                output_format=task.output_format,
                resolution_percentage=task.resolution_percentage,
                samples=task.samples,
                threads=job.threads,
            ),
            log_path=job.log_path,
            on_event=on_event,
            on_log=job.on_log,
            on_frame_ready=job.on_frame_saved,
            cancel=job.cancel,
        )
        return RenderOutcome(ok=result.ok, error=result.error, log_tail=result.log_tail)

    return render_task
