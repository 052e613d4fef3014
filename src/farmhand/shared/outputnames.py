"""Output file names from a template: `{job}/{frame:04d}.{ext}`.

A template comes from a user and becomes paths in a zip, on a client's disk and on
shared storage, so it is checked twice: its shape when the job is submitted (only known
fields, no attribute or index access, a `{frame}`, no absolute or `..` parts), and every
name it produces before use (`safe_relative_path`), because a field's value (the job's
name) could still carry a `/` or `..` — the job name is flattened to one safe
component for that reason (`safe_component`).

Fields: `{job}` (the job's name, made safe), `{job_id}`, `{frame}`, `{task}` (the id
of the task that rendered it), `{ext}` (`png`, `exr`, `jpg`, without the dot). Integers take a
format spec (`{frame:04d}`, `{job_id:06d}`), whose width and precision are read, and
refused over `MAX_SPEC_NUMBER`, before anything is formatted: `{frame:>999999999}` would
otherwise build a 1 GB name (5 GB of memory) only to refuse it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

from farmhand.shared.paths import MAX_PATH_CHARS, UnsafePathError, safe_relative_path

FIELDS = frozenset({"job", "job_id", "frame", "task", "ext"})
INTEGER_FIELDS = frozenset({"job_id", "frame", "task"})
MAX_TEMPLATE = 200
DEFAULT_SHARED_TEMPLATE = "{frame:04d}.{ext}"
"""How frames are named in a shared-storage output folder when the job sets no template."""

DOWNLOADED_KINDS = ("output", "pass")
"""The kinds of a job's files a download of the job holds (the zip, `farmhand download`,
`submit --wait`): what the scene was asked to write — its frames and video (`output`)
and its compositor File Output nodes' files (`pass`). Not previews (`previews/0001.jpg`,
a small JPEG Blender makes so the manager can show a thumbnail of any frame, EXR too)
nor tiles (`tiles/0001/r0c1.png`, parts of a tiled still, already merged into its
frame): neither is something the person asked the scene for. Both stay listed in
`GET /api/jobs/{id}/files` and can be fetched one by one."""
KEPT_PUNCTUATION = frozenset("._ -")
COMPONENT_BYTES = 100
"""The longest `{job}` value in UTF-8 bytes: room for the rest of a template's file name
within the 255 bytes a file name may have (`paths.MAX_COMPONENT_BYTES`)."""
MAX_SPEC_NUMBER = MAX_PATH_CHARS
"""The largest width or precision in a field's format spec: a field formatted wider
names a path longer than any path may be (`safe_relative_path`), so no template this
refuses ever named a file, but for a precision with `g` (`{frame:.2000g}` is `1`, yet
Python sets aside a buffer as long as the precision: 2 GB for `.2147483647g`)."""
_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d*))?[a-zA-Z%]?",
    re.DOTALL,
)
"""Python's format spec (`[[fill]align][sign][z][#][0][width][grouping][.precision][type]`);
`\\d` as Python's own parser: any Unicode decimal digit counts."""
SHOWN_CHARS = 80
"""How much of a produced name an error message quotes."""


class TemplateError(ValueError):
    """The template is malformed or could name a file outside the target folder."""


@dataclass(frozen=True)
class OutputName:
    """The values one output's name is made of."""

    job: str
    job_id: int
    frame: int
    ext: str
    task: int = 0


def safe_component(text: str) -> str:
    """Text turned into one harmless path component: a job's name as the `{job}` folder.

    Letters, marks and digits of any script are kept (`ショット 1`, `Сцена`, `हिन्दी`),
    so jobs named in Japanese or Cyrillic get folders of their own instead of all
    becoming `_`; every other character (separators, `&`, control characters) becomes
    `_`, one for a run. The text is NFC first, so `ü` typed as `u` and a combining mark
    stays one letter. Whether the result may be a path is `safe_relative_path`'s call,
    not this function's: a name it refuses (a Windows device name such as `CON` or
    `LPT¹`) gets a leading `_`.
    """
    kept: list[str] = []
    for char in unicodedata.normalize("NFC", text):
        if char in KEPT_PUNCTUATION or unicodedata.category(char)[0] in "LMN":
            kept.append(char)
        elif not kept or kept[-1] != "_":
            kept.append("_")
    cleaned = "".join(kept)
    cleaned = cleaned.encode()[:COMPONENT_BYTES].decode(errors="ignore").strip(" .")
    if not cleaned:
        return "job"
    try:
        return safe_relative_path(cleaned)
    except UnsafePathError:
        return safe_relative_path("_" + cleaned)


def check_template(template: str) -> str:
    """Return the template if it is well formed and can only name files inside the
    target folder; raise `TemplateError` saying what is wrong otherwise."""
    if not template or len(template) > MAX_TEMPLATE:
        raise TemplateError(f"an output template is 1 to {MAX_TEMPLATE} characters")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TemplateError(f"output template {template!r}: {error}") from error
    seen = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            known = ", ".join("{" + name + "}" for name in sorted(FIELDS))
            raise TemplateError(f"unknown field {{{field}}} in output template; use {known}")
        if conversion is not None:
            raise TemplateError(f"output template field {{{field}}}: no '!' conversions")
        if spec and ("{" in spec or field not in INTEGER_FIELDS):
            raise TemplateError(f"output template field {{{field}}} takes no format spec")
        if spec:
            _check_spec(field, spec)
        seen.add(field)
    if "frame" not in seen:
        raise TemplateError("an output template needs {frame}, or every frame gets one name")
    # Two very different samples: a template that is safe for both is safe in shape.
    for sample in (OutputName("job", 1, 1, "png", 0), OutputName("j", 123456, -42, "exr", 9)):
        render(template, sample)
    return template


def _check_spec(field: str, spec: str) -> None:
    """Refuse a format spec Python would refuse for an integer, or whose width or
    precision is over `MAX_SPEC_NUMBER`, without formatting anything."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise TemplateError(
            f"output template field {{{field}}}: {spec!r} is not a format spec for a "
            "number (e.g. {frame:04d})"
        )
    for part in ("width", "precision"):
        digits = match[part]
        if digits and int(digits) > MAX_SPEC_NUMBER:
            raise TemplateError(
                f"output template field {{{field}}}: {part} {int(digits)} is over "
                f"{MAX_SPEC_NUMBER}, longer than any path may be"
            )


def _shown(name: str) -> str:
    """`name` quoted for an error message, at most `SHOWN_CHARS` of it."""
    if len(name) <= SHOWN_CHARS:
        return repr(name)
    return f"{name[:SHOWN_CHARS]!r}… ({len(name)} characters)"


def render(template: str, values: OutputName) -> str:
    """The relative path this template gives for these values, checked to stay inside.

    `template` is one `check_template` passed (now or when its job was submitted), so
    no field is formatted wider than `MAX_SPEC_NUMBER`."""
    try:
        name = template.format(
            job=safe_component(values.job),
            job_id=values.job_id,
            frame=values.frame,
            task=values.task,
            ext=values.ext.lstrip("."),
        )
    except (ValueError, KeyError, IndexError, OverflowError) as error:
        # OverflowError: `{frame:c}` of a number that is no character (-42).
        raise TemplateError(f"output template {template!r}: {error}") from error
    try:
        return safe_relative_path(name)
    except UnsafePathError as error:
        if len(name) > MAX_PATH_CHARS:  # too long to be quoted by the error: a prefix
            raise TemplateError(
                f"output template {template!r} names {_shown(name)}: {error}"
            ) from error
        raise TemplateError(f"output template {template!r}: {error}") from error


def extension(path: str) -> str:
    """`frames/0001.png` → `png`."""
    dot = path.rfind(".")
    return path[dot + 1 :].lower() if dot > path.rfind("/") else ""
