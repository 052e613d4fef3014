"""Download headers carry any file name as ASCII (an HTTP header is Latin-1: `日本.png`
was a 500), with nothing a name could inject; the client reads `X-Output-Name` back."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from farmhand.client import FarmhandClient
from farmhand.manager.api.disposition import attachment, header_text


@pytest.mark.parametrize(
    ("name", "plain"),
    [
        ("0001.png", "0001.png"),
        ("日本.png", "_.png"),
        ("emoji😀.png", "emoji_.png"),
        ("ünï cödé %22.png", "_n_ c_d_ _22.png"),
        ('a"; filename=evil.sh\r\nSet-Cookie: x=1', "a_ filename_evil.sh_Set-Cookie_ x_1"),
        ("\\..\\x", "_.._x"),
        ("ショット", "_"),
        (" ", "download"),
    ],
)
def test_the_header_is_ascii_and_gives_the_name_back(name: str, plain: str) -> None:
    header = attachment(name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.startswith(f"attachment; filename=\"{plain}\"; filename*=UTF-8''")
    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == name
    assert header.count('"') == 2 and header.count(";") == 2, "one value of each"


@pytest.mark.parametrize(
    ("name", "sent"),
    [
        ("Shot 10/0002.png", "Shot 10/0002.png"),  # an ASCII name reads as it is
        ("ショット 10/0001.png", "%E3%82%B7%E3%83%A7%E3%83%83%E3%83%88 10/0001.png"),
        ("50%/ü.png", "50%25/%C3%BC.png"),
    ],
)
def test_an_output_name_header_is_ascii_and_percent_decodes_back(name: str, sent: str) -> None:
    assert header_text(name) == sent
    assert unquote(sent) == name


def test_the_client_saves_a_frame_under_its_name_in_any_script(tmp_path: Path) -> None:
    """`farmhand download --frame --template 'ショット_{frame:04d}.{ext}'` (was a 500)."""
    name = "ショット 10/ショット_0001.png"

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"x-output-name": header_text(name), "content-disposition": attachment(name)}
        return httpx.Response(200, content=b"png", headers=headers)

    client = FarmhandClient("http://m.test", "t", transport=httpx.MockTransport(handler))
    path = client.download_frame(1, 1, tmp_path, template="{job}/ショット_{frame:04d}.{ext}")
    assert path == tmp_path / "ショット 10" / "ショット_0001.png"
    assert path.read_bytes() == b"png"
