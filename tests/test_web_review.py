"""A second hostile review of the subscriber pages after issue 10, against the real ``cadence
web``: what the first fixes left open (a body cut short by a disconnect was processed as if it
were whole; HEAD answered 405 on every page; a signed Mailgun event with an impossible time or
delivery id was a 500; sub-addressing sent one inbox 20 confirmation emails a minute)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.db.models import Delivery
from cadence.db.session import transaction
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token, data_link, fresh_ip, signup_form, subscribe_and_confirm


def test_a_body_cut_short_by_a_disconnect_signs_up_no_one(web: WebServer, web_sink: SmtpSink) -> None:
    client = web.client()
    token = csrf_token(client.get("/subscribe").text)
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    fields = {"csrf_token": token, **signup_form()}
    del fields["email"]
    # The browser meant "cut.short@example.com" and lost its connection one byte early.
    body = (urllib.parse.urlencode(fields) + "&email=cut.short@example.co").encode()
    head = (
        "POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Forwarded-For: {client.headers['X-Forwarded-For']}\r\n"
        f"Cookie: {cookie}\r\nContent-Length: {len(body) + 1}\r\n\r\n"
    ).encode()
    before = len(web_sink.messages)
    with socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)  # let the server read what was sent before the line drops
    time.sleep(1.0)  # a background confirmation email would land by now
    assert web.subscriber("cut.short@example.co") is None
    assert len(web_sink.messages) == before
    # The same request sent whole still works.
    whole = client.post("/subscribe", data={**fields, "email": "cut.short@example.com"})
    assert whole.status_code == 200 and web.subscriber("cut.short@example.com") is not None
    assert web_sink.wait_for(before + 1)[-1].rcpt_tos == ("cut.short@example.com",)


def test_head_answers_like_get_on_every_page_and_changes_nothing(web: WebServer, web_sink: SmtpSink) -> None:
    preferences = subscribe_and_confirm(web, web_sink, "head.check@example.com")
    token = preferences.removeprefix("/p/")
    client = web.client()
    data = data_link(web, web_sink, client, preferences)
    paths = ["/subscribe", "/manage", preferences, data, f"/api/preferences/{token}", "/api/consent", "/confirm/x"]
    for path in paths:
        got = client.get(path)
        head = client.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b"", path
        for name in ("content-type", "cache-control", "x-robots-tag", "x-frame-options", "referrer-policy"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
    assert client.head("/").status_code == 303
    # Link scanners HEAD what they find in an email: the data link is not spent by it.
    page = client.get(data)
    assert page.status_code == 200
    export = client.post(f"{data}/export", data={"csrf_token": csrf_token(page.text)})
    assert export.status_code == 200 and export.json()["profile"]["email"] == "head.check@example.com"
    assert httpx.head(web.url(data)).status_code == 404  # spent: HEAD says so like GET


MAILGUN_KEY = "mailgun-key-for-the-review"


@pytest.fixture(scope="module")
def mailgun_web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    env = {"CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    with WebServer(tmp_path_factory.mktemp("mailgun"), web_sink, extra_env=env) as server:
        yield server


def signed(event_data: dict[str, Any]) -> dict[str, Any]:
    timestamp, token = str(int(time.time())), secrets.token_hex(16)  # Mailgun signs wall-clock time
    digest = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": digest}, "event-data": event_data}


@pytest.mark.parametrize("timestamp", [1e300, -1e15, 10**40])
def test_a_signed_mailgun_event_from_no_possible_time_is_a_400_naming_the_field(
    mailgun_web: WebServer, timestamp: float
) -> None:
    event = {"event": "complained", "id": "t", "recipient": "someone@example.com", "timestamp": timestamp}
    response = httpx.post(mailgun_web.url("/webhooks/mailgun"), json=signed(event))
    assert response.status_code == 400 and response.json()["detail"].startswith("timestamp: ")


@pytest.mark.parametrize("delivery_id", [10**30, "9" * 40, -5, 1e300, True])
def test_a_signed_bounce_naming_no_possible_delivery_is_matched_by_recipient(
    mailgun_web: WebServer, delivery_id: Any
) -> None:
    address = f"bounce.{secrets.token_hex(4)}@example.com"
    mailgun_web.add_delivery(address)
    event = {
        "event": "failed", "severity": "permanent", "id": secrets.token_hex(4), "recipient": address,
        "timestamp": 1.8e9, "user-variables": {"delivery_id": delivery_id},
    }
    response = httpx.post(mailgun_web.url("/webhooks/mailgun"), json=signed(event))
    assert response.status_code == 200 and response.json()["kind"] == "hard_bounce"
    subscriber = mailgun_web.subscriber(address)
    assert subscriber is not None and subscriber.status == "bounced"


def test_sub_addresses_of_one_inbox_share_the_confirmation_limit(web: WebServer, web_sink: SmtpSink) -> None:
    consent = httpx.get(web.url("/api/consent")).json()["version"]
    variants = [f"bombed+{n}@example.com" for n in range(6)] + ["bombed@example.com"]
    variants += ["b.o.m.b.e.d@gmail.com", "Bom.bed@googlemail.com", "bo.mbed+x@gmail.com", "bom.bed@gmail.com"]
    variants += ["bombed@gmail.com"]
    before = len(web_sink.messages)
    for address in variants:  # each from its own IP: the per-IP limit is not what protects the inbox
        body = {"email": address, "consent_version": consent, "terrain": "trails", "training_for_race": False}
        response = httpx.post(web.url("/api/subscribe"), json=body, headers=web.from_ip(fresh_ip()))
        assert response.status_code == 202  # the same answer, limited or not
    time.sleep(1.5)  # the background sends
    sent = [m.rcpt_tos[0].lower() for m in web_sink.messages[before:]]
    assert len([a for a in sent if a.startswith("bombed+")]) == 3
    assert len([a for a in sent if a.endswith(("@gmail.com", "@googlemail.com"))]) == 3 + 1
    # The plain address is not blocked by its variants: it keeps its own one-an-hour.
    assert "bombed@example.com" in sent and "bombed@gmail.com" in sent
    # Skipped ones stay pending and free to ask again later (their hourly limit was released).
    skipped = web.subscriber("bombed+5@example.com")
    assert skipped is not None and skipped.status == "pending"
    assert skipped.consent["confirmation_sent_at"] is None


def test_a_refused_confirmation_is_logged_without_the_address(tmp_path: Any) -> None:
    refuse = "550 5.1.1 <{}>: Recipient address rejected"
    sink = SmtpSink(rcpt_reply=lambda rcpt: refuse.format(rcpt) if "refused" in rcpt.lower() else None)
    with sink, WebServer(tmp_path, sink) as web:
        client = web.client()
        token = csrf_token(client.get("/subscribe").text)
        client.post("/subscribe", data={"csrf_token": token, **signup_form(email="Is.Refused@example.com")})
        deadline = time.monotonic() + 5
        while "email not sent" not in web.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = web.log()
        # The refusal is in the ledger, like a drip step's (issue 12): the row failed, the
        # address is suppressed; the log says which delivery, never to whom.
        with transaction(web.settings.database_url) as session:
            [row] = session.scalars(select(Delivery)).all()
            assert (row.kind, row.state) == ("transactional", "failed") and "550 5.1.1" in row.last_error
    assert f"transactional email not sent now (deliveries [{row.id}]): 0 retrying, 1 failed" in log
    assert "refused@example.com" not in log.lower()
