"""Wire models of the routes the web UI added: users, tokens, blend info, live events.

Kept apart from `farmhand.shared.schemas` (the core farm's wire format) so the two can
grow independently; the rules are the same: strict requests, typed answers, secrets
appear only in the one answer that creates them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from farmhand.shared.schemas import FreeText

Role = Literal["user", "admin"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- users


EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"
"""What an account's e-mail may look like, whoever supplies it (an admin, an OAuth
provider): one `@`, no spaces and no control characters (a newline or NUL in an
address ends up in logs, CSV exports and mail headers)."""
EMAIL_MAX_LENGTH = 320


def plausible_email(text: str) -> bool:
    return len(text) <= EMAIL_MAX_LENGTH and re.fullmatch(EMAIL_PATTERN, text) is not None


USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
"""A user's name: the API's and the CLI's alike (`accounts.create_user` checks it too)."""
USER_NAME_MAX_LENGTH = 100


class UserCreate(_Strict):
    name: str = Field(min_length=1, max_length=USER_NAME_MAX_LENGTH, pattern=USER_NAME_PATTERN)
    # No `pattern`, as in `UserUpdate`: `accounts.create_user` says what is wrong in words.
    email: str | None = Field(default=None, max_length=EMAIL_MAX_LENGTH, description="Optional.")
    role: Role = "user"
    password: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="Optional: lets them sign in with e-mail and password. Never echoed.",
    )


class UserInfo(BaseModel):
    id: int
    name: str
    email: str | None
    role: str
    created_at: datetime
    disabled: bool = False
    has_password: bool = Field(default=False, description="Can sign in with a password.")
    providers: list[str] = Field(default_factory=list, description="Linked OAuth providers.")
    locked_until: datetime | None = Field(
        default=None,
        description="Until when too many failed sign-ins lock the account (null: not "
        "locked; only in admins' answers). Setting a password or unlocking lifts it.",
    )


class UserUpdate(_Strict):
    disabled: bool | None = Field(
        default=None, description="A disabled user's sign-ins, tokens and sessions stop working."
    )
    role: Role | None = None
    # No `pattern`: `accounts.set_email` checks EMAIL_PATTERN and says what is wrong in
    # words ("'a@@b' is not an e-mail address"), which the web UI shows at the field,
    # where a schema error would quote the regular expression.
    email: str | None = Field(
        default=None,
        max_length=EMAIL_MAX_LENGTH,
        description="A new e-mail to sign in with (one @, no spaces; unique, any case). "
        "Omit to keep it.",
    )


class PasswordSet(_Strict):
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(_Strict):
    old_password: str = Field(max_length=1024, description="Empty if you never had one.")
    new_password: str = Field(min_length=1, max_length=1024)


class LoginRequest(_Strict):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    user: UserInfo
    csrf: str | None = Field(
        description="The session's CSRF nonce: send it as X-CSRF-Token on every "
        "state-changing request made with the session cookie (None with a bearer token)."
    )


class AuthProvider(BaseModel):
    key: str
    label: str
    login_url: str


class UserCreated(BaseModel):
    user: UserInfo
    token: str = Field(description="The user's first API token; shown once, stored hashed.")


# --------------------------------------------------------------------------- tokens


class TokenCreate(_Strict):
    name: FreeText = Field(min_length=1, max_length=100, description="What the token is for.")


class TokenInfo(BaseModel):
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    token: TokenInfo
    secret: str = Field(description="Shown once; the manager keeps only its hash.")


class RunnerTokenCreate(_Strict):
    expires_in_hours: int | None = Field(
        default=24 * 7, ge=1, le=24 * 366, description="None: never expires."
    )
    max_uses: int | None = Field(
        default=None, ge=1, le=100_000, description="1: single use. None: any number of runners."
    )


class RunnerTokenInfo(BaseModel):
    id: int
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    uses: int = Field(description="How many runners registered with it.")
    max_uses: int | None = Field(default=None, description="None: any number of runners.")
    active: bool


class RunnerTokenCreated(BaseModel):
    token: RunnerTokenInfo
    secret: str = Field(description="Shown once; the manager keeps only its hash.")
    command: str = Field(description="The `farmhand worker …` command that uses it.")


# ----------------------------------------------------------------------- blend info


class BlendInfo(BaseModel):
    """A .blend's own scene settings, read by Blender on the manager, to pre-fill a form.

    The file is kept as a blob, so a job can then be created from `sha256` (a
    `JobCreate` manifest) without sending the file again.
    """

    sha256: str
    file_name: str
    size: int
    blender_version: str = Field(description="The Blender on the manager that read the file.")
    saved_with: str | None = Field(
        default=None,
        description="The Blender that saved the file (major.minor, from its header); "
        "None when the header does not say.",
    )
    farm_blenders: list[str] = Field(
        default_factory=list,
        description="The Blender that read the file and those of the enabled workers, "
        "oldest first: a file saved by a newer one than all of them waits for a worker "
        "that can open it.",
    )
    scene: str
    frame_start: int
    frame_end: int
    frame_step: int = Field(
        default=1,
        ge=1,
        description="Every how many frames Blender renders the range (the scene's Frame "
        "Step); 1 when Blender did not say.",
    )
    resolution_x: int
    resolution_y: int
    resolution_percentage: int
    engine: str
    samples: int | None
    output_format: str
    rendered_format: str = Field(
        default="",
        description="The format the farm renders the scene's frames in when the job keeps "
        "the file's format (`images.rendered_format`): `output_format` itself, or PNG for "
        "one the farm does not collect (Targa, DPX, a movie...).",
    )
    fps: float | None = None
    """Frames per second as Blender plays the scene (`fps / fps_base`: 29.97, not 30)."""
    has_camera: bool


# --------------------------------------------------------------------------- events


class LiveEvent(BaseModel):
    """The `data:` of one Server-Sent Event: what changed, never the data itself."""

    kind: Literal["job", "task", "runner", "output"]
    id: int
    job_id: int | None


class ProjectUpload(BaseModel):
    """A zip of a packed project, stored as blobs: a job manifest ready to submit."""

    files: dict[str, str] = Field(description="Relative path → SHA-256, for `JobCreate`.")
    blend_files: list[str] = Field(description="The .blend files in it, shallowest first.")
    main_file: str = Field(description="The one the scene settings were read from.")
    size: int
    info: BlendInfo | None = Field(
        default=None, description="The main file's scene settings, when Blender could read them."
    )
    info_error: str | None = None
