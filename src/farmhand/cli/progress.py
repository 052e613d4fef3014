"""The CLI's Rich progress bars, laid out so the bar and the counts survive a narrow terminal.

Rich lays a `Progress` out as a table: a `TextColumn` never shrinks (it is `no_wrap`), while
the bar, the byte count, the speed and the time left may. So a long description (a job's
status while the manager is unreachable, say) took the whole line of an 80-column terminal
and the bar and the `3/10` were squeezed to nothing: the user saw words and no progress.

Here it is the other way round. Words (`Words`) give way: when the line is too long they
are cut, with an ellipsis. The counts (bytes, frames, files, speed, time) keep their width.
The bar shares what is left with the words, at most `BAR_WIDTH` wide, so it is still there
in 60 columns. Every bar of the CLI is built here (`progress`, `transfer_progress`), so
they all behave alike.
"""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column
from rich.text import Text

BAR_WIDTH = 40
"""The bar's width when the line has room (Rich's own); it is narrower when it has not."""


class Words(TextColumn):
    """Text that gives way in a narrow terminal: cut to fit, ending in an ellipsis.

    Its table column may shrink (it is not `no_wrap`, so Rich's table narrows it before
    the counts), and the text itself does not wrap, so a cut description stays one line.
    """

    def __init__(self, text_format: str, *, markup: bool = True) -> None:
        super().__init__(text_format, markup=markup, table_column=Column(no_wrap=False))

    def render(self, task: Task) -> Text:
        text = super().render(task)
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text


class _Kept(ProgressColumn):
    """A count's column that never shrinks (a count cut short would lie): `column`,
    drawn as it is, in a table column that is `no_wrap`."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return self.column.render(task)


def progress(
    description: Words,
    *counts: ProgressColumn,
    tail: Words | None = None,
    console: Console,
    transient: bool = True,
    disable: bool = False,
) -> Progress:
    """A bar laid out as `description  bar  counts…  tail`, fitting a narrow terminal:
    the counts keep their width, the bar and the words (`description`, `tail`) share the
    rest (see the module docstring)."""
    bar = BarColumn(bar_width=None, table_column=Column(max_width=BAR_WIDTH))
    columns: list[ProgressColumn] = [description, bar, *(_Kept(c) for c in counts)]
    if tail is not None:
        columns.append(tail)
    return Progress(*columns, console=console, transient=transient, disable=disable)


def transfer_progress(console: Console, *, files: bool = False) -> Progress:
    """A bar over bytes: `description  bar  3.1/10.5 MB  [3/10 files]  1.2 MB/s  0:00:06`.
    With `files`, each task has a `files` field holding its file count's words."""
    counts: list[ProgressColumn] = [DownloadColumn()]
    if files:
        counts.append(TextColumn("{task.fields[files]}"))
    counts += [TransferSpeedColumn(), TimeRemainingColumn()]
    return progress(Words("{task.description}"), *counts, console=console)
