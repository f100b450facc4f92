"""Postmark and Mailgun transports against local HTTP servers that check the documented request
(endpoint, auth, fields) and answer with the providers' documented replies."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.errors import ConfigError, PermanentSendError, TransientSendError
from cadence.transports.mailgun import MailgunTransport
from cadence.transports.postmark import PostmarkTransport
from cadence.transports.registry import open_transport

DATE = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
TOKEN = "server-token-1234"
API_KEY = "key-abcdef"
DOMAIN = "mg.example.com"
INACTIVE = (
    "You tried to send to recipient(s) that have been marked as inactive. Found inactive addresses: {}. "
    "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual suppression."
)

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return status, {"Content-Type": "application/json", **(headers or {})}, data


@dataclass
class FakeApi:
    """A provider on 127.0.0.1: ``answer`` plays it; ``forced`` replies pre-empt the next requests."""

    answer: Callable[[Request], Reply]
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    forced: list[Reply] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: Request) -> Reply:
        with self.lock:
            self.requests.append(request)
            if self.forced:
                return self.forced.pop(0)
        return self.answer(request)


@contextmanager
def serve(answer: Callable[[Request], Reply]) -> Iterator[FakeApi]:
    api = FakeApi(answer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, headers, data = api.handle(
                Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def message(n: int, to: str = "", **changes: Any) -> OutgoingMessage:
    base = OutgoingMessage(
        sender=Address("news@example.com", "Trail News"),
        to=Address(to or f"runner{n}@example.org", "Zoë Runner"),
        subject=f"Step {n}: hips first",
        html=f"<p>Hello {n}</p>",
        text=f"Hello {n}\n",
        message_id=make_message_id(n, "secret", "example.com"),
        reply_to="coach@example.com",
        list_id="Trail News <trail-news.example.com>",
        list_unsubscribe_url=f"https://example.com/u/{n}",
        list_unsubscribe_mailto=f"mailto:unsubscribe@example.com?subject={n}",
        extra_headers=(("X-Campaign", "lower-back-pain"),),
        metadata={"delivery_id": str(n), "campaign": "lower-back-pain"},
    )
    return replace(base, **changes)


# --- Postmark ---------------------------------------------------------------------------------


def postmark_answer(request: Request) -> Reply:
    """Postmark's documented behaviour for POST /email/batch."""
    assert request.method == "POST" and request.path == "/email/batch"
    if request.headers.get("x-postmark-server-token") != TOKEN:
        return reply(401, {"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied."})
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    try:
        batch = json.loads(request.body)
    except ValueError:
        return reply(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
    if not isinstance(batch, list) or len(batch) > 500:
        return reply(422, {"ErrorCode": 410, "Message": "The batch contains too many messages."})
    answers = []
    for item in batch:
        assert {"From", "To", "Subject", "MessageStream"} <= set(item)
        assert "HtmlBody" in item or "TextBody" in item
        addr = item["To"].rpartition("<")[2].rstrip(">")
        if addr.startswith("inactive"):
            answers.append({"ErrorCode": 406, "Message": INACTIVE.format(addr)})
        elif addr.startswith("invalid"):
            answers.append({"ErrorCode": 300, "Message": f"Invalid 'To' address: '{addr}'."})
        elif addr.startswith("pending"):
            answers.append({"ErrorCode": 412, "Message": "Your account is pending approval."})
        else:
            answers.append(
                {
                    "ErrorCode": 0,
                    "Message": "OK",
                    "MessageID": str(uuid.uuid4()),
                    "SubmittedAt": "2024-05-01T07:30:00.0000000-04:00",
                    "To": item["To"],
                }
            )
    return reply(200, answers)


@pytest.fixture
def postmark() -> Iterator[tuple[FakeApi, PostmarkTransport]]:
    with serve(postmark_answer) as api:
        transport = PostmarkTransport(TOKEN, message_stream="broadcast", base_url=api.url, timeout=5)
        yield api, transport
        transport.close()


def test_postmark_receives_the_documented_batch_payload(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    api, transport = postmark
    assert transport.needs_mime is False
    results = transport.send_many([(message(1), b""), (message(2), b"")])
    assert [r.status for r in results] == ["sent", "sent"]
    [request] = api.requests
    assert request.headers["x-postmark-server-token"] == TOKEN
    first = json.loads(request.body)[0]
    assert first == {
        "From": "Trail News <news@example.com>",
        "To": "=?utf-8?b?Wm/DqyBSdW5uZXI=?= <runner1@example.org>",
        "Subject": "Step 1: hips first",
        "ReplyTo": "coach@example.com",
        "HtmlBody": "<p>Hello 1</p>",
        "TextBody": "Hello 1\n",
        "Headers": [
            {"Name": "Message-ID", "Value": make_message_id(1, "secret", "example.com")},
            {"Name": "List-Id", "Value": "Trail News <trail-news.example.com>"},
            {
                "Name": "List-Unsubscribe",
                "Value": "<https://example.com/u/1>, <mailto:unsubscribe@example.com?subject=1>",
            },
            {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
            {"Name": "X-Campaign", "Value": "lower-back-pain"},
        ],
        "MessageStream": "broadcast",
        "Metadata": {"delivery_id": "1", "campaign": "lower-back-pain"},
    }
    assert results[0].provider_message_id and results[0].provider_message_id != results[1].provider_message_id


def test_postmark_per_message_error_codes(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    _, transport = postmark
    batch = [
        message(1),
        message(2, "inactive@example.org"),
        message(3, "invalid@example.org"),
        message(4, "pending@example.org"),
        message(5),
    ]
    results = transport.send_many([(m, b"") for m in batch])
    assert [r.status for r in results] == ["sent", "permanent", "permanent", "transient", "sent"]
    assert results[1].detail.startswith("406: You tried to send")
    assert results[2].detail == "300: Invalid 'To' address: 'invalid@example.org'."


def test_postmark_account_problem_on_every_message_is_a_configuration_error(
    postmark: tuple[FakeApi, PostmarkTransport],
) -> None:
    _, transport = postmark
    with pytest.raises(ConfigError, match="CADENCE_EMAIL_URL: Postmark account problem 412"):
        transport.send_many([(message(1, "pending@example.org"), b"")])


def test_postmark_bad_token_is_a_configuration_error() -> None:
    with serve(postmark_answer) as api:
        transport = PostmarkTransport("wrong", base_url=api.url)
        with pytest.raises(ConfigError, match="server token"):
            transport.send_many([(message(1), b"")])


def test_postmark_422_whole_request_errors(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    api, transport = postmark
    api.forced.append(reply(422, {"ErrorCode": 413, "Message": "This account may not send."}))
    with pytest.raises(ConfigError, match="413"):
        transport.send_many([(message(1), b"")])
    api.forced.append(reply(422, {"ErrorCode": 409, "Message": "JSON data required."}))
    with pytest.raises(PermanentSendError, match="ErrorCode 409"):
        transport.send_many([(message(1), b"")])


def test_postmark_429_and_5xx_are_transient_with_retry_after(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    api, transport = postmark
    api.forced.append(reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, {"Retry-After": "30"}))
    results = transport.send_many([(message(1), b""), (message(2), b"")])
    assert [(r.status, r.retry_after) for r in results] == [("transient", 30.0), ("transient", 30.0)]
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    api.forced.append(reply(503, b"Service Unavailable", {"Retry-After": later}))
    [result] = transport.send_many([(message(3), b"")])
    assert result.status == "transient" and result.retry_after is not None and 100 < result.retry_after <= 120
    api.forced.append(reply(500, {"ErrorCode": 0, "Message": "Internal"}))
    [result] = transport.send_many([(message(4), b"")])
    assert (result.status, result.retry_after) == ("transient", None)


def test_postmark_batches_of_more_than_500_are_split(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    api, transport = postmark
    results = transport.send_many([(message(n), b"") for n in range(501)])
    assert [len(json.loads(r.body)) for r in api.requests] == [500, 1]
    assert [r.status for r in results] == ["sent"] * 501


def test_postmark_refuses_an_injected_header_without_sending_it(postmark: tuple[FakeApi, PostmarkTransport]) -> None:
    api, transport = postmark
    bad = message(2, subject="Hi\r\nBcc: evil@evil.test")
    results = transport.send_many([(message(1), b""), (bad, b""), (message(3), b"")])
    # The message is at fault, not the address: "failed" (no suppression).
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert results[1].detail.startswith("Subject")
    assert [item["Subject"] for item in json.loads(api.requests[0].body)] == [
        "Step 1: hips first",
        "Step 3: hips first",
    ]


def test_postmark_unreachable_before_anything_was_sent_raises_transient() -> None:
    with serve(postmark_answer) as api:
        url = api.url
    transport = PostmarkTransport(TOKEN, base_url=url, timeout=2)  # the server is gone now
    with pytest.raises(TransientSendError, match="unreachable"):
        transport.send_many([(message(1), b"")])


def test_postmark_url(tmp_path: Path) -> None:
    with serve(postmark_answer) as api:
        transport = open_transport(
            f"postmark://{TOKEN}@?message_stream=broadcast&base_url={api.url}", data_dir=tmp_path, redis_url=None
        )
        assert [r.status for r in transport.send_many([(message(1), b"")])] == ["sent"]
        assert json.loads(api.requests[0].body)[0]["MessageStream"] == "broadcast"
        transport.close()
    default = open_transport(f"postmark://{TOKEN}@", data_dir=tmp_path, redis_url=None)
    assert isinstance(default, PostmarkTransport)
    assert default.endpoint == "https://api.postmarkapp.com/email/batch" and default.message_stream == "outbound"


# --- Mailgun ----------------------------------------------------------------------------------


def form_parts(request: Request) -> list[EmailMessage]:
    """Parse a multipart/form-data body with the email package (RFC 7578 is MIME)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    parsed = email.message_from_bytes(head + request.body, policy=email.policy.HTTP)
    assert isinstance(parsed, EmailMessage) and parsed.is_multipart()
    return [part for part in parsed.iter_parts() if isinstance(part, EmailMessage)]


def mailgun_answer(request: Request) -> Reply:
    """Mailgun's documented behaviour for POST /v3/{domain}/messages.mime."""
    expected = "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()
    if request.headers.get("authorization") != expected:
        return 401, {"Content-Type": "text/plain"}, b"Forbidden"
    if request.path != f"/v3/{DOMAIN}/messages.mime":
        return reply(404, {"message": "Domain not found"})
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = {part.get_param("name", header="content-disposition"): part for part in form_parts(request)}
    to = fields["to"].get_content()
    assert isinstance(to, str)
    if to.startswith("invalid"):
        return reply(400, {"message": "to parameter is not a valid address. please check documentation"})
    return reply(200, {"id": f"<20240501073000.{uuid.uuid4().hex}@{DOMAIN}>", "message": "Queued. Thank you."})


@pytest.fixture
def mailgun() -> Iterator[tuple[FakeApi, MailgunTransport]]:
    with serve(mailgun_answer) as api:
        transport = MailgunTransport(API_KEY, DOMAIN, base_url=api.url, timeout=5)
        yield api, transport
        transport.close()


def test_mailgun_receives_the_mime_bytes_the_recipient_and_variables(
    mailgun: tuple[FakeApi, MailgunTransport],
) -> None:
    api, transport = mailgun
    msg = message(1)
    mime = build_mime(msg, date=DATE)
    [result] = transport.send_many([(msg, mime)])
    assert result.status == "sent" and result.provider_message_id
    assert result.provider_message_id.endswith(f"@{DOMAIN}>")
    [request] = api.requests
    parts = form_parts(request)
    names = [part.get_param("name", header="content-disposition") for part in parts]
    assert names == ["to", "v:delivery_id", "v:campaign", "message"]
    assert parts[0].get_content() == "runner1@example.org"
    assert parts[1].get_content() == "1"
    message_part = parts[3]
    assert message_part.get_filename() == "message.mime"
    assert message_part.get_content_type() == "message/rfc822"
    # byte-exact: the file part carries our MIME (and DKIM signature) unchanged
    boundary = request.headers["content-type"].partition("boundary=")[2].encode()
    raw_parts = request.body.split(b"--" + boundary)
    assert raw_parts[4].split(b"\r\n\r\n", 1)[1] == mime + b"\r\n"


def test_mailgun_replies_map_to_results(mailgun: tuple[FakeApi, MailgunTransport]) -> None:
    api, transport = mailgun
    invalid = message(2, "invalid@example.org")
    api.forced.append(reply(429, {"message": "Too many requests"}, {"Retry-After": "7"}))
    api.forced.append(reply(500, {"message": "Internal error"}))
    pairs = [(m, build_mime(m, date=DATE)) for m in (message(1), message(3), invalid, message(4))]
    results = transport.send_many(pairs)
    assert [(r.status, r.retry_after) for r in results] == [
        ("transient", 7.0),
        ("transient", None),
        # A 400 may be about our sender or content as well as the recipient: the delivery fails,
        # but an ambiguous answer never suppresses the address (bounces do that).
        ("failed", None),
        ("sent", None),
    ]
    assert results[2].detail == "Mailgun HTTP 400: to parameter is not a valid address. please check documentation"


def test_mailgun_bad_key_or_domain_is_a_configuration_error() -> None:
    with serve(mailgun_answer) as api:
        for key, domain in (("wrong", DOMAIN), (API_KEY, "other.example.com")):
            transport = MailgunTransport(key, domain, base_url=api.url)
            with pytest.raises(ConfigError, match="CADENCE_EMAIL_URL: Mailgun refused"):
                transport.send_many([(message(1), build_mime(message(1), date=DATE))])


def test_mailgun_url_and_regions(tmp_path: Path) -> None:
    eu = open_transport(f"mailgun://{API_KEY}@{DOMAIN}?region=eu", data_dir=tmp_path, redis_url=None)
    us = open_transport(f"mailgun://{API_KEY}@{DOMAIN}", data_dir=tmp_path, redis_url=None)
    assert isinstance(eu, MailgunTransport) and isinstance(us, MailgunTransport)
    assert eu.endpoint == f"https://api.eu.mailgun.net/v3/{DOMAIN}/messages.mime"
    assert us.endpoint == f"https://api.mailgun.net/v3/{DOMAIN}/messages.mime"
    with serve(mailgun_answer) as api:
        local = open_transport(f"mailgun://{API_KEY}@{DOMAIN}?base_url={api.url}", data_dir=tmp_path, redis_url=None)
        assert [r.status for r in local.send_many([(message(1), build_mime(message(1), date=DATE))])] == ["sent"]
    with pytest.raises(ConfigError, match=r"CADENCE_EMAIL_URL: region='mars'.*\*\*\*@"):
        open_transport(f"mailgun://{API_KEY}@{DOMAIN}?region=mars", data_dir=tmp_path, redis_url=None)
