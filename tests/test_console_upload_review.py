"""Hostile review of the surfaces added for issues 13/14 (the console's CSV upload, the composer
and the drafts API), over real HTTP against a real ``cadence web``: the findings that were
fixed, each pinned by the request that showed it.

- A file part whose file name is empty (``filename=""``: what a browser sends when no file was
  chosen, and what anyone can send with a body behind it) was streamed to ``imports/`` and then
  left there: the page said "Choose a CSV file" but never deleted it. A low-privilege editor
  could fill the disk, CADENCE_IMPORT_MAX_MB at a time, with files nobody would ever clean up
  (and any real rows in them stayed, against storage limitation, GDPR Art. 5(1)(e)).
- The body guard checked JSON bodies before any token was, for up to the composer's 2 MB on
  /api/admin/newsletters: its nesting scan was a Python loop over every character, ~0.4 s of
  the event loop per anonymous request (every other request waited), and 2 MB of ``[],``
  became 690,000 lists to parse. The scan is now C-speed string work, and an API body may hold
  at most 10,000 arrays and objects. Unclosed brackets (``[`` x 100,000) still answer 400.
  Since then a staff-API write without a valid token is refused (401) before its body is read
  at all (tests/test_web_slow_clients.py); these checks now guard the token holders' bodies.
- The composer's "session ended" page shows back the text a POST carried (so a writer whose
  session ended loses nothing). Any site could make a browser POST there, so it showed words of
  the attacker's choosing on our console's address; now only a POST from our own origin (or
  without an Origin, not a browser) that carries a session cookie gets its text back (a POST
  with no cookie at all is refused without reading its body).
"""

from __future__ import annotations

import json
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


DRAFTS = "/api/admin/newsletters/drafts"


@pytest.fixture(scope="module")
def write_token(web: WebServer) -> str:
    from cadence.db.session import transaction
    from cadence.operations.staff_access import create_token

    with transaction(web.settings.database_url) as session:
        return create_token(session, "review-writer", "write", actor="cli:test", now=web.clock.now())[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" + "[]," * 600_000 + "[]]", "more than 10,000 JSON arrays and objects"),  # 1.8 MB, under the 2 MB limit
        ("[" * 100_000, "more than 10,000"),
        ("[" * 40, "nested deeper than 32"),
        ('{"a":' * 33 + "1" + "}" * 33, "nested deeper than 32"),
        ('{"fields": {"body": "a\\u0000"}}', "NUL"),
        ('{"fields": {"subject": "\\udc00"}}', "surrogate"),
    ],
)
def test_hostile_json_to_the_drafts_api_is_a_400_before_it_is_parsed(
    web: WebServer, body: str, reason: str, write_token: str
) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {write_token}"}
    answer = httpx.post(web.url(DRAFTS + "/preview"), content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["detail"]


def test_json_that_only_looks_hostile_inside_its_strings_passes_the_guard(web: WebServer) -> None:
    """Brackets, an escaped backslash before "u0000" and a long text inside strings are text, not
    structure: the guard lets them through (to the token check: 401 without one)."""
    fields = {"body": "[" * 20_000 + "{" * 20_000 + "\\u0000 and \\ud800 as words", "subject": "a" * 500_000}
    answer = httpx.post(web.url(DRAFTS + "/preview"), json={"fields": fields})
    assert answer.status_code == 401, answer.text
    deep_enough = json.dumps({"fields": {"audience": {"rules": [{"attribute": "x"}] * 9_000}}})
    assert (
        httpx.post(
            web.url(DRAFTS + "/preview"), content=deep_enough, headers={"content-type": "application/json"}
        ).status_code
        == 401
    )


def test_a_form_posted_from_another_site_is_not_shown_back_on_the_composers_expired_page(web: WebServer) -> None:
    bait = "Your account is locked: call 555-0100 and read out your code"
    form = {"csrf_token": "x", "new_id": "bait", "subject": bait, "body": bait}
    for origin in ("https://evil.example", "null"):
        answer = httpx.post(web.url("/admin/newsletters/new"), data=form, headers={"origin": origin})
        assert answer.status_code == 403
        assert bait not in answer.text
    # The writer's own expired form (our origin, the ended session's cookie) still gets its text
    # back: nothing typed is lost.
    ours = httpx.post(
        web.url("/admin/newsletters/new"),
        data=form,
        headers={"origin": web.base_url},
        cookies={"cadence_session": "a-session-that-has-ended"},
    )
    assert ours.status_code == 403
    assert bait in ours.text
