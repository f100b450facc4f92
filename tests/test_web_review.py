"""A second hostile review of the subscriber pages after issue 10, against the real ``cadence
web``: what the first fixes left open (a body cut short by a disconnect was processed as if it
were whole; HEAD answered 405 on every page)."""

from __future__ import annotations

import socket
import time
import urllib.parse

import httpx

from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, csrf_token, data_link, signup_form, subscribe_and_confirm


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
