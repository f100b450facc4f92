"""Hostile review of the console's CSV upload (/admin/imports), over real HTTP against a real
``cadence web``: the findings that were fixed, each pinned by the request that showed it.

- A file part whose file name is empty (``filename=""``: what a browser sends when no file was
  chosen, and what anyone can send with a body behind it) was streamed to ``imports/`` and then
  left there: the page said "Choose a CSV file" but never deleted it. A low-privilege editor
  could fill the disk, CADENCE_IMPORT_MAX_MB at a time, with files nobody would ever clean up
  (and any real rows in them stayed, against storage limitation, GDPR Art. 5(1)(e)).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.console import session_client
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token

BOUNDARY = "review-boundary-7f3a"


def multipart(parts: list[tuple[bytes, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A hand-made multipart body (httpx leaves out an empty filename, so it cannot send one)."""
    body = b""
    for head, value in parts:
        body += f"--{BOUNDARY}\r\n".encode() + head + b"\r\n\r\n" + value + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    with WebServer(tmp_path_factory.mktemp("upload-review"), web_sink) as server:
        yield server


@pytest.fixture(scope="module")
def editor(web: WebServer) -> Iterator[httpx.Client]:
    client = session_client(web, "editor-review@example.com", "editor")
    yield client
    client.close()


def stored_files(web: WebServer) -> list[str]:
    folder = web.settings.imports_dir
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_file_part_with_an_empty_name_is_refused_and_not_left_on_disk(web: WebServer, editor: httpx.Client) -> None:
    token = csrf_token(editor.get("/admin/imports").text)
    before = stored_files(web)
    body, headers = multipart(
        [
            (b'Content-Disposition: form-data; name="csrf_token"', token.encode()),
            (b'Content-Disposition: form-data; name="mode"', b"valid"),
            (b'Content-Disposition: form-data; name="file"; filename=""', b"email\nsomeone@example.com\n" * 2000),
        ]
    )
    answer = editor.post("/admin/imports", content=body, headers=headers)
    assert answer.status_code == 400
    assert "Choose a CSV file to import." in answer.text
    assert stored_files(web) == before, "the refused upload stayed in the imports folder"
