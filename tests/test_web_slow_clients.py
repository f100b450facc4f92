"""Hostile clients over raw sockets against one real ``cadence web`` (uvicorn in a subprocess):
slow request heads and bodies (slowloris), anonymous bodies the console must refuse unread, and
a newsletter body counted in characters, not in percent-encoded bytes.

The server runs with short deadlines (CADENCE_HEADER_TIMEOUT_SECONDS and friends) so a test
waits seconds, not minutes; every wait is a poll or a socket read with a deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from cadence.operations import newsletter_drafts as drafts
from tests.support.composer import editor_client
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token, fresh_ip

HEADER_SECONDS = 2.0
IDLE_SECONDS = 1.5
TOTAL_SECONDS = 4.0
# Long enough for any answer the server owes; far shorter than "forever".
PATIENCE = 20.0


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    extra = {
        "CADENCE_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
        "CADENCE_BODY_IDLE_SECONDS": str(IDLE_SECONDS),
        "CADENCE_BODY_TIMEOUT_SECONDS": str(TOTAL_SECONDS),
        "CADENCE_UPLOAD_TIMEOUT_SECONDS": str(TOTAL_SECONDS),
        "CADENCE_IMPORT_RUN": "web",
    }
    with WebServer(tmp_path_factory.mktemp("slow-clients"), web_sink, extra_env=extra) as server:
        yield server


def _connect(web: WebServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", web.port), timeout=PATIENCE)
    return sock


def _head(method: str, path: str, length: int, content_type: str, **headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        f"X-Forwarded-For: {fresh_ip()}",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reply(sock: socket.socket) -> tuple[int, bytes, float]:
    """(status, everything received until the server closed or PATIENCE ran out, seconds taken).
    Raises AssertionError when nothing came back in time: the server held the connection."""
    started = time.monotonic()
    received = b""
    sock.settimeout(PATIENCE)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break  # a kept-alive answer: the head is enough
    except TimeoutError:
        pass
    except ConnectionResetError:
        pass
    took = time.monotonic() - started
    assert received, f"no answer within {PATIENCE} s: the connection was held open"
    status = int(received.split(b" ", 2)[1])
    return status, received, took


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (polled until PATIENCE runs out)."""
    sock.settimeout(PATIENCE)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        return False
    return True


# ---------------------------------------------------------------------------- slow request heads


def test_a_connection_that_never_sends_a_request_is_closed_with_408(web: WebServer) -> None:
    with _connect(web) as sock:
        status, received, took = _reply(sock)
        assert status == 408 and b"too slowly" in received
        assert took < HEADER_SECONDS + 5


def test_headers_trickled_one_line_at_a_time_are_cut_off(web: WebServer) -> None:
    with _connect(web) as sock:
        sock.sendall(b"GET /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        sent = 0
        try:
            # A new header line every 0.2 s: each one would reset a plain idle timer.
            while time.monotonic() - started < HEADER_SECONDS + 5:
                sock.sendall(f"X-Slow-{sent}: still here\r\n".encode())
                sent += 1
                time.sleep(0.2)  # the hostile client's own pace, not a wait for the server
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = _reply(sock)
        assert status == 408
        assert time.monotonic() - started < HEADER_SECONDS + 5


def test_a_kept_alive_connection_gets_the_full_deadline_for_each_request(web: WebServer) -> None:
    """The deadline is per request head, so honest keep-alive clients are not cut off."""
    with httpx.Client(base_url=web.base_url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/subscribe").status_code == 200


# ---------------------------------------------------------------------------- slow bodies


@pytest.mark.parametrize("path", ["/subscribe", "/api/subscribe"])
def test_a_body_that_stops_halfway_is_answered_408(web: WebServer, path: str) -> None:
    kind = "application/json" if path.startswith("/api/") else "application/x-www-form-urlencoded"
    with _connect(web) as sock:
        sock.sendall(_head("POST", path, 1000, kind) + b"email=someone%40exam")
        status, received, took = _reply(sock)
        assert status == 408, received[:300]
        assert b"too slowly" in received
        assert took < IDLE_SECONDS + 5


def test_a_logged_in_editors_body_that_stops_halfway_is_answered_408(web: WebServer) -> None:
    """The console's bodies are read only after the session check (deferred): the same deadline."""
    client = editor_client(web, "slow.typist@clinic.example")
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    head = _head("POST", "/admin/newsletters/new", 100_000, "application/x-www-form-urlencoded", Cookie=cookies)
    with _connect(web) as sock:
        sock.sendall(head + b"body=half+a+newsletter")
        status, received, took = _reply(sock)
        assert status == 408, received[:300]
        assert took < IDLE_SECONDS + 5


def test_a_body_trickled_a_byte_at_a_time_meets_the_total_deadline(web: WebServer) -> None:
    with _connect(web) as sock:
        sock.sendall(_head("POST", "/subscribe", 5000, "application/x-www-form-urlencoded"))
        started = time.monotonic()
        try:
            while time.monotonic() - started < TOTAL_SECONDS + 5:
                sock.sendall(b"x")  # under the idle deadline every time: only the total stops it
                time.sleep(0.3)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = _reply(sock)
        assert status == 408
        assert time.monotonic() - started < TOTAL_SECONDS + 5


def _upload_head(web: WebServer, client: httpx.Client, length: int) -> tuple[bytes, bytes]:
    token = csrf_token(client.get("/admin/imports").text)
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    boundary = "slowloris-boundary"
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{token}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\nvalid\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="people.csv"\r\n'
        "Content-Type: text/csv\r\n\r\nemail,first_name\r\n"
    ).encode() + b"".join(f"person{n}@example.com,Person{n}\r\n".encode() for n in range(2000))
    head = _head("POST", "/admin/imports", length, f"multipart/form-data; boundary={boundary}", Cookie=cookies)
    return head, start


def _parts(web: WebServer) -> list[Path]:
    folder = web.settings.imports_dir
    return sorted(folder.glob("upload-*")) if folder.exists() else []


def test_an_upload_that_stops_halfway_is_408_and_leaves_no_file(web: WebServer) -> None:
    client = editor_client(web, "slow.uploader@clinic.example")
    head, start = _upload_head(web, client, 10 * 1024 * 1024)
    with _connect(web) as sock:
        sock.sendall(head + start)
        # The file was being written while the body came: it is there until the deadline.
        deadline = time.monotonic() + PATIENCE
        while not _parts(web) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _parts(web), "the upload never reached the imports folder"
        status, received, took = _reply(sock)
        assert status == 408, received[:300]
        assert took < IDLE_SECONDS + 5
    assert _parts(web) == []  # nothing half-written stays behind
    with_jobs = client.get("/admin/imports").text
    assert "people.csv" not in with_jobs  # and no job was queued


# ---------------------------------------------------------------------------- refused unread


@pytest.mark.parametrize(
    ("path", "length"),
    [
        ("/admin/newsletters/new", 2 * 1024 * 1024 - 1),  # the composer's limit: 2 MiB
        ("/admin/newsletters/some-draft", 2 * 1024 * 1024 - 1),
        ("/admin/subscribers/1/tags", 8000),  # a route whose fields were FastAPI Form() parameters
        ("/admin/campaigns/lower-back-pain/cancel", 8000),
        ("/admin/users", 8000),
        ("/admin/login", 8000),  # public: no CSRF cookie, nothing to read the body for
        ("/admin/logout", 8000),
    ],
)
def test_an_anonymous_post_is_refused_before_its_body_is_read(web: WebServer, path: str, length: int) -> None:
    """Headers and 1 KB of a body announced as `length`: the 403 must come while the client still
    owes the rest, so the server cannot have read (or waited for) it."""
    with _connect(web) as sock:
        sock.sendall(_head("POST", path, length, "application/x-www-form-urlencoded") + b"body=" + b"x" * 1019)
        status, received, took = _reply(sock)
        assert status == 403, received[:400]
        assert took < IDLE_SECONDS  # not the slow-body deadline: refused at once
        assert _closed(sock)  # and the rest of the body is not waited for on this connection


def test_a_postmark_webhook_without_its_credentials_is_refused_before_its_body_is_read(web: WebServer) -> None:
    """Postmark's credentials are headers (Basic); this server has none set: 503, unread."""
    with _connect(web) as sock:
        sock.sendall(_head("POST", "/webhooks/postmark", 1024 * 1024 - 1, "application/json") + b'{"a": "' + b"x" * 999)
        status, received, took = _reply(sock)
        assert status in (401, 503), received[:400]
        assert took < IDLE_SECONDS


def test_an_anonymous_2_mib_post_sent_in_full_is_refused_the_same(web: WebServer) -> None:
    body = urlencode({"body": "x" * (2 * 1024 * 1024 - 100)})
    answer = httpx.post(
        web.url("/admin/newsletters/new"),
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **web.from_ip()},
        timeout=PATIENCE,
    )
    assert answer.status_code == 403
    assert "x" * 100 not in answer.text  # nothing of the body shown back to a stranger


@pytest.mark.parametrize(
    ("path", "authorization"),
    [
        ("/api/admin/newsletters/drafts", ""),
        ("/api/staff/newsletters/drafts", "Bearer not-a-token-we-made"),
        ("/api/admin/subscribers/tags", "Basic dXNlcjpwYXNz"),
    ],
)
def test_a_staff_api_write_without_a_valid_token_is_refused_before_its_body_is_read(
    web: WebServer, path: str, authorization: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with _connect(web) as sock:
        sock.sendall(
            _head("POST", path, 2 * 1024 * 1024 - 1, "application/json", **headers) + b'{"body": "' + b"x" * 1000
        )
        status, received, took = _reply(sock)
        assert status == 401, received[:400]
        assert b"www-authenticate: bearer" in received.lower()
        assert took < IDLE_SECONDS
        assert _closed(sock)


def test_a_staff_api_write_with_a_valid_token_still_works(web: WebServer) -> None:
    from cadence.db.session import transaction
    from cadence.operations.staff_access import create_token

    with transaction(web.settings.database_url) as session:
        token = create_token(session, "slow-clients", "write", actor="cli:test", now=web.clock.now())[0]
    answer = httpx.post(
        web.url("/api/admin/subscribers/tags"),
        json={"emails": ["nobody@example.com"], "add": ["x"]},
        headers={"Authorization": f"Bearer {token}", **web.from_ip()},
        timeout=PATIENCE,
    )
    # Past the gate to the route itself: the operation's own answer (that address is unknown).
    assert answer.status_code in (200, 404), answer.text
    assert "token" not in answer.text


# ---------------------------------------------------------------------------- characters, not bytes


def test_a_newsletter_of_100000_emoji_is_saved_and_100001_refused_by_name(web: WebServer) -> None:
    drafts.create(
        web.settings,
        "emoji-issue",
        {
            "based_on": "lower-back-pain",
            "subject": "Emoji",
            "preheader": "A note from the clinic",
            "body": "First.",
            "audience": {"topics": ["clinic-news"]},
            "send_at": "now",
        },
        actor="cli:test",
        now=web.clock.now(),
    )
    client = editor_client(web, "emoji.editor@clinic.example")
    token = csrf_token(client.get("/admin/newsletters/emoji-issue").text)
    body = "🏃" * 100_000  # 400 KB of UTF-8, 1.2 MB percent-encoded: over Starlette's 1 MB per field
    form = {"csrf_token": token, "expected_version": "1", "body": body, "topics": "clinic-news", "send_mode": "now"}
    saved = client.post("/admin/newsletters/emoji-issue", data=form, timeout=PATIENCE)
    assert saved.status_code == 303, saved.text[:300]
    assert drafts.get(web.settings, "emoji-issue").fields["body"] == body

    over = client.post(
        "/admin/newsletters/emoji-issue", data={**form, "expected_version": "2", "body": body + "🏃"}, timeout=PATIENCE
    )
    assert over.status_code == 400
    assert "100,000 characters" in over.text and "100,001" in over.text  # the field's limit, as typed


def test_a_newsletter_past_the_body_limit_is_refused_in_the_writers_terms(web: WebServer) -> None:
    client = editor_client(web, "huge.editor@clinic.example")
    token = csrf_token(client.get("/admin/newsletters/new").text)
    huge = client.post("/admin/newsletters/new", data={"csrf_token": token, "body": "🏃" * 200_000}, timeout=PATIENCE)
    assert huge.status_code == 413
    assert "100,000 characters" in huge.text


def test_a_console_field_over_its_limit_is_named(web: WebServer) -> None:
    client = editor_client(web, "tagger@clinic.example")
    token = csrf_token(client.get("/admin/subscribers").text)
    answer = client.post("/admin/subscribers/1/tags", data={"csrf_token": token, "tag": "t" * 201})
    assert answer.status_code == 400
    assert "tag" in answer.text and "200" in answer.text
