"""The database schema: the single source of truth of the farm.

Statuses are plain strings holding the `farmhand.shared.schemas` enum values; they are
changed only by `farmhand.manager.scheduling.state`.

Jobs, tasks, workers and users are named by their ids outside the database (links,
`farmhand job 37`, a worker's outbox, a runner's credentials, a session cookie), so an
id is never handed out twice: on SQLite their tables are `AUTOINCREMENT`
(`NEVER_REUSED`). Without it SQLite gives a
new row max(id)+1, and purging the newest job gave the next one, someone else's, its id.
PostgreSQL's sequences never go back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from farmhand.manager.db.types import UTCDateTime

NEVER_REUSED = {"sqlite_autoincrement": True}
"""Table options of a table whose ids are never given to a second row (see above)."""


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="user")
    created_at: Mapped[datetime]
    password_hash: Mapped[str | None] = mapped_column(String(255))
    """argon2 hash; None for people who sign in only with OAuth or an API token."""
    disabled_at: Mapped[datetime | None]
    """A disabled user can neither sign in nor use their tokens or sessions."""
    session_epoch: Mapped[int] = mapped_column(default=0)
    """Part of every session cookie; bumping it (sign-out, disable, new password) ends
    all of this user's browser sessions at once."""

    __table_args__ = NEVER_REUSED
    """A session cookie names its user by id: a deleted user's cookie must never name
    the next user created (migration 0013)."""


class OAuthIdentity(Base):
    """A person's account at an OAuth/OIDC provider, linked by the provider's subject."""

    __tablename__ = "oauth_identities"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("provider", "subject"),)


class LoginFailure(Base):
    """A failed sign-in, counted per account and per address for rate limiting.

    In the database rather than in memory so that several managers behind one
    address share the count."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400))
    at: Mapped[datetime]

    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RunnerRegistrationToken(Base):
    __tablename__ = "runner_registration_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    uses: Mapped[int] = mapped_column(default=0)
    max_uses: Mapped[int | None]
    """How many runners may register with it (1: single use); None: any number."""


class Worker(Base):
    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="idle")
    """Whether the worker is reachable: `idle` (online) or `offline`, set by heartbeats
    and the reaper. What an admin decided is kept apart in `admin_state`, so a disabled
    worker that goes offline and comes back is still disabled."""
    admin_state: Mapped[str] = mapped_column(String(20), default="enabled")
    """`enabled`, `disabled` or `draining` (finish the current task, then take no more)."""
    asleep: Mapped[bool] = mapped_column(default=False)
    """Inside a window of its sleep schedule: takes no work."""
    sleep_schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """SQL NULL when there is none (not JSON `null`): the reaper selects `IS NOT NULL`."""
    capabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat: Mapped[datetime | None]
    registered_at: Mapped[datetime]
    address: Mapped[str | None] = mapped_column(String(100))
    """The address its requests come from, as the manager sees them (`api/runner.py`,
    register and heartbeat): the proxy's behind one, unless its forwarded headers are
    trusted."""
    gave_back_at: Mapped[datetime | None]
    """When it last gave a task back itself (`POST /api/runner/tasks/{id}/release`: its
    machine cannot work, or it is stopping), with that task's id (no foreign key: the
    job may be deleted, the give-back still says why the worker sits idle) and the
    reason it gave. Null once a new run of it starts (registration, a starting
    heartbeat) or it signs off. Kept here rather than told by the worker, so that no
    request body changes; whether it has taken a task since is read from the tasks at
    listing time (`api/admin`), so the claim writes nothing more."""
    gave_back_task_id: Mapped[int | None]
    gave_back_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = NEVER_REUSED


class DeletedRunner(Base):
    """The secret of a runner an admin deleted: its worker is told it was locked out on
    purpose (`api/deps.runner_deleted`) and stops, rather than taking the 401 of a
    secret the manager never knew (a database restored from a backup) as a cue to
    register again. Kept forever: a row is a few dozen bytes per deletion, and a
    machine may come back with its old credentials after any time.

    Looked up only for a secret no worker holds, so it costs authentication nothing."""

    __tablename__ = "deleted_runners"
    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    worker_id: Mapped[int] = mapped_column(unique=True)
    """The deleted worker's id (never handed out again, `NEVER_REUSED`): a manager
    process that still remembers the secret for this id (`RunnerIdCache`) finds the
    row by it when the worker's own row is gone."""
    name: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[datetime]
    deleted_by: Mapped[str] = mapped_column(String(100))
    """The admin's user name at the time (the account may be renamed or deleted later)."""


class Blocklist(Base):
    """A worker that failed too many tasks of a job gets no more tasks of that type there."""

    __tablename__ = "blocklist"
    id: Mapped[int] = mapped_column(primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task_type: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("worker_id", "job_id", "task_type"),)


class TaskDependency(Base):
    """`task_id` may run only once `depends_on_id` has completed."""

    __tablename__ = "task_dependencies"
    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Blob(Base):
    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    crc32: Mapped[int | None] = mapped_column(BigInteger)
    """The bytes' CRC-32, which a job's zip declares before them (`storage/zipplan.py`):
    taken as the blob is written; null for a blob stored before it was kept (or placed
    from a resumable upload), taken and stored by the first zip that holds it."""
    created_at: Mapped[datetime]
    touched_at: Mapped[datetime | None]
    """When a client last learned the manager holds this blob (a dedup hit in
    `/api/blobs/missing` or a repeated upload): it may be about to create a job naming
    it without uploading, so garbage collection and job deletion spare it for a while."""
    used_at: Mapped[datetime | None]
    """When a job first named this blob as one of its files (`storage/gc.py`
    `mark_used`); null for a blob no job has ever used, which garbage collection keeps
    only for the grace period and which counts for its uploaders' quota."""


class BlobUpload(Base):
    """Who sent a blob's bytes: a blob is a user's to name in a job only if they sent
    it, or it is a file of one of their jobs (`storage/access.py`). Knowing a hash is
    not enough: it would hand out anyone's file whose hash is known."""

    __tablename__ = "blob_uploads"
    sha256: Mapped[str] = mapped_column(
        ForeignKey("blobs.sha256", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    uploaded_at: Mapped[datetime]
    """When the user first sent the bytes (sending them again keeps it)."""
    asked_at: Mapped[datetime | None]
    """When the user was last told the blob is stored while they held it
    (`/api/blobs/missing`, a resumable upload's start; `gc.touch_blobs`): another submit
    of theirs may be about to name it, so their claim is not released
    (`gc.release_upload`). Their own, so the answer to a release says nothing about
    other people's; null if never."""


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(40), default="animation")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    status_reason: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(default=50)
    settings: Mapped[dict[str, Any]]
    main_file: Mapped[str] = mapped_column(String(1024))
    blender_saved: Mapped[str | None] = mapped_column(String(20))
    """The Blender version that saved the main .blend (from its header), e.g. `5.0`:
    only workers with a Blender at least that new may render it."""
    blender_pinned: Mapped[str | None] = mapped_column(String(20))
    """The Blender series (major.minor, `5.0`) the job's first render task was claimed
    with; its other render tasks go only to workers that render with that series, so
    no still is merged from tiles (nor an animation cut from frames) of two Blenders.
    Set by the claim (`scheduling/claim.py`), cleared by a requeue of every task."""
    scene_fps: Mapped[float | None]
    """The scene's frame rate, as the first worker to open the file reported it: the
    job's video uses it unless the job's settings name one."""
    missing_files: Mapped[list[str] | None] = mapped_column(JSON)
    """Files the scene used that did not exist when it was submitted (`--allow-missing`),
    as the submitter named them (`JobCreate.missing_files`); None for none."""
    missing_count: Mapped[int | None]
    """How many there were in all (more than `missing_files` lists past its limit)."""
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_jobs_runnable", "status", "priority", "created_at"), NEVER_REUSED)


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    type: Mapped[str] = mapped_column(String(40), default="render")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    frames: Mapped[list[int]] = mapped_column(JSON)
    """The frames this task delivers. A tile of a tiled still delivers none (its `merge`
    task delivers the frame), and so counts in no frame progress."""
    frames_done: Mapped[int] = mapped_column(default=0)
    tile: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)
    """For a tile of a tiled still: `TileSpec` (frame, column, row, columns, rows)."""
    attempts: Mapped[int] = mapped_column(default=0)
    """How many times the task was handed to a worker."""
    failures: Mapped[int] = mapped_column(default=0)
    """How many of those ended in failure; the retry policy looks only at this."""
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    last_error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress_at: Mapped[datetime | None]
    """When the worker last reported on this task (for no-progress timeouts)."""
    render_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    """Seconds Blender spent on the frames of this task finished so far (this attempt)."""
    frame: Mapped[int | None]
    """The frame being rendered now, with its `sample` of `samples_total` (live progress)."""
    sample: Mapped[int | None]
    samples_total: Mapped[int | None]
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    """The most memory Blender used on a frame of this task."""

    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_tasks_claim", "status", "job_id", "index"),
        Index("ix_tasks_worker", "worker_id", "status"),
        NEVER_REUSED,
    )


class TaskFailure(Base):
    __tablename__ = "task_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class JobFile(Base):
    """An input of a job (its .blend and assets) or an output (a rendered frame)."""

    __tablename__ = "job_files"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)
    frame: Mapped[int | None]
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    render_seconds: Mapped[float | None]
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("job_id", "kind", "path"),
        # A frame's output row, found without scanning the job's other outputs: every
        # upload replaces it and every completion checks its task's frames have one.
        Index("ix_job_files_frame", "job_id", "kind", "frame"),
        # The files that use a blob: garbage collection, storage use, who may name it.
        Index("ix_job_files_sha256", "sha256"),
        # A task's files: deleting a task sets theirs to null (a big job's deletion
        # deletes thousands), and a tile's completion checks its task has one.
        Index("ix_job_files_task_id", "task_id"),
    )


__all__ = [
    "ApiToken",
    "Base",
    "Blob",
    "BlobUpload",
    "Blocklist",
    "DeletedRunner",
    "Job",
    "JobFile",
    "RunnerRegistrationToken",
    "Task",
    "TaskDependency",
    "TaskFailure",
    "User",
    "Worker",
]
