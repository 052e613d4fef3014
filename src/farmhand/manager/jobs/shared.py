"""Jobs on shared storage: the .blend stays on the NAS, paths are stored platform-neutral.

The manager never opens files on the share (it may not even mount it): it only turns
the submitter's paths into `{variable}/…` with its `path_variables`, and each worker
turns them into its own platform's paths (`farmhand.shared.pathmap`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TypeVar

from farmhand.manager.clock import utcnow
from farmhand.manager.context import ManagerContext
from farmhand.manager.db.models import Job
from farmhand.manager.jobs.submit import SubmitError, add_job, create_job
from farmhand.shared.pathmap import PathMapError, PathVariables, to_neutral
from farmhand.shared.schemas import JobCreate, JobSettings, SharedJobCreate

_S = TypeVar("_S", bound=JobSettings)


def on_known_share(field: str, path: str, variables: PathVariables) -> str:
    """`path` (a submitter's, or already `{variable}/…`) in `{variable}/…` form, where
    the variable is one of the manager's: raise `SubmitError` naming `field` otherwise.

    `to_neutral` takes a path written as `{variable}/…` as it is, so one naming a
    variable the manager does not have (a typo, or a manager with none) was accepted and
    its job waited, queued, with no reason given: it is refused here, naming the known
    variables, as a path on no known share is."""
    try:
        neutral = to_neutral(path, variables)
    except PathMapError as error:
        raise SubmitError(f"{field}: {error}") from error
    variable = neutral[1 : neutral.index("}")]
    if variable not in variables:
        known = ", ".join("{" + name + "}" for name in sorted(variables))
        raise SubmitError(
            f"{field}: {path!r} names the path variable {{{variable}}}, which the manager "
            "does not have"
            + (f"; known variables: {known}" if known else " (it has no path_variables)")
        )
    return neutral


def neutral_output_dir(context: ManagerContext, request: _S) -> _S:
    """The request with its `output_dir` (if any) in `{variable}/…` form."""
    if request.output_dir is None:
        return request
    variables = context.settings.path_variables
    neutral = on_known_share("output_dir", request.output_dir, variables)
    return request.model_copy(update={"output_dir": neutral})


def create_uploaded_job(context: ManagerContext, owner_id: int, request: JobCreate) -> Job:
    """An uploaded job, whose frames may also go to shared storage (`output_dir`)."""
    return create_job(context, owner_id, neutral_output_dir(context, request))


def create_shared_job(context: ManagerContext, owner_id: int, request: SharedJobCreate) -> Job:
    """Create and compile a job whose .blend (and assets) are read from shared storage."""
    main = on_known_share("blend_path", request.blend_path, context.settings.path_variables)
    if PurePosixPath(main).suffix.lower() != ".blend":
        raise SubmitError(f"blend_path {request.blend_path!r} is not a .blend file")
    request = neutral_output_dir(context, request)
    settings = JobSettings.model_validate(request.model_dump(include=set(JobSettings.model_fields)))
    settings = settings.model_copy(update={"storage": "shared"})
    now = utcnow()
    with context.db.transaction() as session:
        job = add_job(session, owner_id, settings, main, now)
    context.wakeup.notify()
    return job
