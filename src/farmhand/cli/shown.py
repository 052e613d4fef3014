"""Text the CLI did not write itself, as a terminal should show it: the characters it is.

Job names, reasons, task errors, runner names and notes, tags, owners, file paths come
from the manager (sent there by any user or worker) or from the command line. Printed
as they are, `[red]` in a job name is Rich markup (`[/v2]` crashes the print with a
MarkupError, `[old]` in a path vanishes) and `\\x1b[31m` or a newline in a worker's
give-back reason reaches the admin's terminal as control: colours, a cleared screen, a
line that pretends to be another. So every such text goes through `shown` (inside Rich
markup: a `console.print` f-string, a `Table` cell) or `visible` (printed with
`markup=False`, or handed to something that escapes it), never raw.
"""

from __future__ import annotations

import re

from rich.markup import escape

_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (`\x9b` is a CSI to some terminals)
    "\u2028\u2029"  # line and paragraph separators: a new line to some terminals
    "\u200e\u200f\u202a-\u202e\u2066-\u2069]"  # bidi marks and overrides: reorder the line
)
_SPACES = frozenset("\t\n\v\f\r\u2028\u2029")


def _replacement(found: re.Match[str]) -> str:
    char = found.group()
    if char in _SPACES:
        return " "  # one line: a newline must not start what looks like the CLI's next line
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # caret notation, as `cat -v`: ESC is `^[`
    if code == 0x7F:
        return "^?"
    return "\ufffd"


def visible(text: str) -> str:
    """`text` on one line with every control character made visible: whitespace controls
    (newlines, tabs) as a space, other C0 controls in caret notation (ESC as `^[`), DEL
    as `^?`, C1 controls and bidi overrides as U+FFFD. Nothing left can move the cursor,
    colour, clear or retitle the terminal, or reorder what follows on the line."""
    return _CONTROL.sub(_replacement, text)


def shown(text: object) -> str:
    """`text` (str() of it) for a Rich markup string or a `Table` cell: `visible`, and
    its brackets escaped, so `[red]` and `[/v2]` print as themselves."""
    return escape(visible(str(text)))


def shown_lines(text: object) -> str:
    """`shown`, but its line breaks kept: for a message the CLI wrote over several lines
    (the missing files of a scene, one a line) that quotes others' words. Each line is
    `visible`; only `\n` still breaks one."""
    return "\n".join(shown(line) for line in str(text).split("\n"))
