"""`shown` and `visible`: text the CLI did not write, printed as the characters it is."""

from __future__ import annotations

from rich.console import Console

from farmhand.cli.shown import shown, shown_lines, visible


def printed(markup: str) -> str:
    console = Console(width=200, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(markup, highlight=False)
    return captured.get().rstrip("\n")


def test_markup_prints_as_written() -> None:
    for text in ("shot[/v2] [red]final", "[/]", "a\\", "a\\[b]", "[bold]x[/bold]", "[@click]"):
        assert printed(f"[green]{shown(text)}[/green]") == text


def test_controls_are_visible_on_one_line() -> None:
    assert visible("a\x1b[31mb\x07\x00\x7f") == "a^[[31mb^G^@^?"
    assert visible("one\ntwo\r\tthree\u2028four") == "one two  three four"
    assert visible("x\x9b2Jy\u202egnp.exe") == "x\ufffd2Jy\ufffdgnp.exe"
    assert visible("café ✓ 日本") == "café ✓ 日本", "printable text is left alone"
    assert printed(shown("\x1b[2J[red]")) == "^[[2J[red]"


def test_a_message_of_several_lines_keeps_its_lines_and_nothing_else() -> None:
    """`farmhand submit` lists a scene's missing files one a line; each line is still
    text, never markup or control."""
    message = "2 file(s) the scene uses do not exist:\n  /p/[old]/a.png\n  /p/b\x1b[2J.png"
    assert printed(shown_lines(message)) == (
        "2 file(s) the scene uses do not exist:\n  /p/[old]/a.png\n  /p/b^[[2J.png"
    )
