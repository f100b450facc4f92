"""Issue 10, the hostile review's findings, each against the real ``cadence web``: the shareable
web view, export and erase by an emailed single-use link, body caps and JSON the parser chokes
on, validation replies that echo nothing, per-/64 rate limits and trusted proxies, invisible
characters in names, the business clock on confirmation links, HEAD on click links, opaque
confirmation tokens and token-free access logs."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.core.tokens import link_signature, make_token
from cadence.db.models import Event
from cadence.db.session import transaction
from tests.support.services import unavailable
from tests.support.smtpd import ReceivedMessage, SmtpSink
from tests.support.web import (
    SECRET,
    WebServer,
    csrf_token,
    data_link,
    find_url,
    fresh_ip,
    parse,
    signup_form,
    subscribe_and_confirm,
)

ROBOTS = "noindex, nofollow"


def messages_to(web_sink: SmtpSink, address: str, settle: float = 0.5) -> list[ReceivedMessage]:
    time.sleep(settle)  # background sends land after the response
    return [m for m in web_sink.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]


# ---------------------------------------------------------------------------- 1. web view, data links


def test_the_web_view_shows_no_personal_link_name_or_address(web: WebServer, web_sink: SmtpSink) -> None:
    address = "wilhelmina.shared@example.com"
    subscribe_and_confirm(web, web_sink, address, first_name="Wilhelmina")
    email = parse(web_sink.messages[-1])
    assert "Wilhelmina" in email.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    view = httpx.get(find_url(email, "/v/"))
    assert view.status_code == 200
    assert view.headers["x-robots-tag"] == ROBOTS
    assert f'<meta name="robots" content="{ROBOTS}">' in view.text
    for secret in ("Wilhelmina", address, "/p/", "/u/", "/c/", "/o/"):
        assert secret not in view.text, secret
    assert f"{web.base_url}/manage" in view.text and "Hi there" in view.text


def test_every_token_page_says_noindex_and_the_signup_form_does_not(web: WebServer, web_sink: SmtpSink) -> None:
    _, delivery_id, _ = web.add_delivery("robots@example.com")
    paths = [
        f"/p/{make_token(SECRET, 'preferences', 1)}",
        f"/u/{make_token(SECRET, 'unsubscribe', [1, delivery_id])}",
        f"/v/{make_token(SECRET, 'webview', delivery_id)}",
        "/confirm/not-a-token",
        "/d/not-a-token",
        "/manage",
    ]
    for path in paths:
        response = httpx.get(web.url(path))
        assert response.headers.get("x-robots-tag") == ROBOTS, path
    assert "x-robots-tag" not in httpx.get(web.url("/subscribe")).headers


def test_a_forwarded_preference_link_cannot_export_or_erase(web: WebServer, web_sink: SmtpSink) -> None:
    address = "forwarded@example.com"
    preferences = subscribe_and_confirm(web, web_sink, address)
    client = web.client()  # someone else's browser, holding the forwarded link
    page = client.get(preferences)
    assert page.status_code == 200 and f"{preferences}/export" not in page.text and "/erase" not in page.text
    assert client.get(f"{preferences}/export").status_code == 404
    erase = client.post(f"{preferences}/erase", data={"csrf_token": csrf_token(page.text), "confirm": "yes"})
    assert erase.status_code in (404, 405)
    assert web.subscriber(address) is not None
    # What the link holder can do is ask for a data link: it goes to the address on file only.
    before = len(web_sink.messages)
    link = data_link(web, web_sink, client, preferences)
    [message] = web_sink.messages[before:]
    assert list(message.rcpt_tos) == [address] and link.startswith("/d/")


def test_a_data_link_works_once_and_for_thirty_minutes_of_business_time(web: WebServer, web_sink: SmtpSink) -> None:
    address = "once@example.com"
    preferences = subscribe_and_confirm(web, web_sink, address)
    client = web.client()
    link = data_link(web, web_sink, client, preferences)
    page = client.get(link)
    assert page.status_code == 200 and page.headers["x-robots-tag"] == ROBOTS
    token = csrf_token(page.text)
    assert client.post(f"{link}/export", data={"csrf_token": token}).status_code == 200
    again = client.post(f"{link}/export", data={"csrf_token": token})
    assert again.status_code == 404 and "not valid" in again.text
    assert client.get(link).status_code == 404
    assert client.post(f"{link}/erase", data={"csrf_token": token, "confirm": "yes"}).status_code == 404
    assert web.subscriber(address) is not None

    fresh = data_link(web, web_sink, client, preferences)
    start = web.clock.now()
    try:
        web.clock.advance(timedelta(minutes=29))
        assert client.get(fresh).status_code == 200
        web.clock.advance(timedelta(minutes=2))
        late = client.get(fresh)
        assert late.status_code == 404 and "expired" in late.text
    finally:
        web.clock.set(start)


def test_manage_emails_known_addresses_their_link_and_answers_alike(web: WebServer, web_sink: SmtpSink) -> None:
    known = "manager@example.com"
    subscribe_and_confirm(web, web_sink, known)
    client = web.client()
    form = client.get("/manage")
    assert form.status_code == 200
    answers = []
    for address in (known, "stranger@example.com"):
        response = client.post("/manage", data={"csrf_token": csrf_token(form.text), "email": address})
        assert response.status_code == 200
        answers.append(response.text)
    assert answers[0] == answers[1]
    [*_, message] = messages_to(web_sink, known)
    assert find_url(parse(message), "/p/").startswith(f"{web.base_url}/p/")
    assert messages_to(web_sink, "stranger@example.com", settle=0) == []
    bad = client.post("/manage", data={"csrf_token": csrf_token(form.text), "email": "MARKER-not-an-address"})
    assert bad.status_code == 400 and "MARKER" not in bad.text and "valid email address" in bad.text


# ---------------------------------------------------------------------------- 2. bodies and JSON


def test_oversized_bodies_get_413_before_anything_parses_them(web: WebServer) -> None:
    huge = b'{"email": "' + b"a" * 10_000_000 + b'"}'
    response = httpx.post(
        web.url("/api/subscribe"), content=huge, headers={"Content-Type": "application/json", **web.from_ip()}
    )
    assert response.status_code == 413 and len(response.content) < 200
    assert "too large" in response.json()["detail"]
    form = httpx.post(web.url("/subscribe"), data={"email": "x" * 20_000}, headers=web.from_ip())
    assert form.status_code == 413 and "too large" in form.text and len(form.content) < 200
    hook = httpx.post(web.url("/webhooks/mailgun"), content=b"[" + b"0," * 600_000 + b"0]")
    assert hook.status_code == 413


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"weeks": NaN}', "NaN is not a JSON number"),
        ('{"weeks": Infinity}', "Infinity is not a JSON number"),
        ('{"weeks": -Infinity}', "-Infinity is not a JSON number"),
        ('{"weeks": "\\ud800"}', "lone UTF-16 surrogate"),
        ("[" * 3_000 + "]" * 3_000, "nested deeper than"),  # under the API's 8 KB cap; 100,000 deep below
    ],
)
def test_json_the_parser_accepts_but_nothing_can_use_gets_400(web: WebServer, body: str, reason: str) -> None:
    headers = {"Content-Type": "application/json", **web.from_ip()}
    token = make_token(SECRET, "preferences", 1)
    # Not /webhooks/postmark: its body is read only after its credentials are checked (none are
    # configured here), so a stranger's JSON never reaches the parser (test_web_slow_clients.py).
    for path in (f"/api/preferences/{token}/pause", "/api/subscribe", "/webhooks/mailgun"):
        response = httpx.post(web.url(path), content=body.encode(), headers=headers)
        assert response.status_code == 400, (path, response.text[:200])
        assert reason in response.json()["detail"], path


def test_validation_replies_name_the_field_and_never_repeat_the_input(web: WebServer) -> None:
    marker = "ECHO" * 40
    body = {
        "email": f"{marker}@",
        "first_name": marker,
        "terrain": marker,
        "training_for_race": marker,
        "consent_version": marker,
        f"{marker}_extra": 1,
    }
    response = httpx.post(web.url("/api/subscribe"), json=body, headers=web.from_ip())
    assert response.status_code == 422
    assert "ECHO" not in response.text
    fields = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert {("body", "email"), ("body", "first_name"), ("body", "terrain")} <= fields
    assert ("body", "(unknown field)") in fields
    assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"])


# ---------------------------------------------------------------------------- 3. rate limits


def test_twenty_five_addresses_of_one_ipv6_64_share_one_limit(web: WebServer) -> None:
    statuses = [
        httpx.post(
            web.url("/manage"), data={"email": "x@example.com"}, headers=web.from_ip(f"2001:db8:10:1::{i:x}")
        ).status_code
        for i in range(1, 26)
    ]
    assert statuses[:20] == [403] * 20  # counted, then refused for lacking a CSRF token
    assert statuses[20:] == [429] * 5
    other = httpx.post(web.url("/manage"), data={}, headers=web.from_ip("2001:db8:10:2::1"))
    assert other.status_code == 403  # the next /64 has its own count
    ipv4 = [httpx.post(web.url("/manage"), data={}, headers=web.from_ip(f"203.0.113.{i}")).status_code for i in (1, 2)]
    assert ipv4 == [403, 403]


# ---------------------------------------------------------------------------- 4. invisible characters


@pytest.mark.parametrize("character", ["\u202e", "\u200b", "\ufeff", "\u2066", "\t", "\x85", "\ufffd"])
def test_names_with_invisible_or_control_characters_are_refused_naming_the_field(
    web: WebServer, web_sink: SmtpSink, character: str
) -> None:
    address = f"bidi{ord(character):x}@example.com"
    client = web.client()
    form = client.get("/subscribe")
    data = {"csrf_token": csrf_token(form.text), **signup_form(email=address, first_name=f"Ann{character}Lee")}
    page = client.post("/subscribe", data=data)
    assert page.status_code == 400 and 'id="first_name"' in page.text
    assert "Your first name contains" in page.text
    api = httpx.post(
        web.url("/api/subscribe"),
        json={
            "email": address,
            "first_name": f"{character}Ann",
            "terrain": "roads",
            "training_for_race": False,
            "consent_version": "x",
        },
        headers=web.from_ip(),
    )
    errors = {tuple(e["loc"]): e["msg"] for e in api.json()["detail"]}
    assert api.status_code == 422 and "character" in errors[("body", "first_name")]
    assert web.subscriber(address) is None


def test_names_are_stored_in_nfc_and_joiners_between_letters_are_kept(web: WebServer, web_sink: SmtpSink) -> None:
    client = web.client()
    form = client.get("/subscribe")
    decomposed = "Jose\u0301"  # "José" as e + combining acute
    data = {"csrf_token": csrf_token(form.text), **signup_form(email="nfc@example.com", first_name=decomposed)}
    assert client.post("/subscribe", data=data).status_code == 200
    [message] = messages_to(web_sink, "nfc@example.com")
    confirm_path = find_url(parse(message), "/confirm/").removeprefix(web.base_url)
    client.post(confirm_path, data={"csrf_token": csrf_token(client.get(confirm_path).text)}).raise_for_status()
    subscriber = web.subscriber("nfc@example.com")
    assert subscriber is not None and subscriber.first_name == "Jos\u00e9"
    assert web.drive() == 1  # its first email, so later tests in this module start with nothing due
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # a ZWNJ inside a Persian word
    data = {"csrf_token": csrf_token(form.text), **signup_form(email="zwnj@example.com", first_name=persian)}
    assert client.post("/subscribe", data=data).status_code == 200


# ---------------------------------------------------------------------------- 6. smaller


def test_confirmation_links_expire_on_the_business_clock_and_show_no_id(web: WebServer, web_sink: SmtpSink) -> None:
    client = web.client()
    form = client.get("/subscribe")
    client.post("/subscribe", data={"csrf_token": csrf_token(form.text), **signup_form(email="late@example.com")})
    [message] = messages_to(web_sink, "late@example.com")
    url = find_url(parse(message), "/confirm/")
    token = url.rsplit("/", 1)[1]
    subscriber = web.subscriber("late@example.com")
    assert subscriber is not None
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert subscriber.consent["signup_id"].encode() not in decoded
    # A Fernet token: version byte 0x80 and the issue time in clear, then AES ciphertext and its
    # HMAC. Searching the whole token for "[8," failed once by chance (random ciphertext holds
    # any 3 bytes now and then); the id in clear could only be in the version and time part.
    assert decoded[0] == 0x80 and len(decoded) >= 1 + 8 + 16 + 16 + 32
    clear = decoded[:9]
    assert f"[{subscriber.id},".encode() not in clear and str(subscriber.id).encode() not in token.encode()[:2]
    start = web.clock.now()
    try:
        web.clock.advance(timedelta(days=7, minutes=1))  # in business time only: the wall clock says seconds
        page = httpx.get(url)
        assert page.status_code == 404 and "expired" in page.text
    finally:
        web.clock.set(start)
    assert httpx.get(url).status_code == 200


def test_head_on_a_click_link_answers_like_get_without_recording_a_click(web: WebServer) -> None:
    target = "https://precisionclinicalbodywork.example/book"
    subscriber_id, delivery_id, link_id = web.add_delivery("header@example.com", url=target)
    assert link_id is not None
    path = f"/c/{delivery_id}/{link_id}/{link_signature(SECRET, 'click', delivery_id, link_id)}"

    def clicks() -> int:
        with transaction(web.settings.database_url) as session:
            return len(session.scalars(select(Event).where(Event.subscriber_id == subscriber_id)).all())

    head = httpx.head(web.url(path))
    assert head.status_code == 302 and head.headers["location"] == target and clicks() == 0
    assert httpx.head(web.url(f"/c/{delivery_id}/{link_id}/forged")).status_code == 404
    get = httpx.get(web.url(path))
    assert get.status_code == 302 and get.headers["location"] == target and clicks() == 1


# ---------------------------------------------------------------------------- a second server


@pytest.fixture(scope="module")
def bare_web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    """No trusted proxy, access logs on, webhooks configured."""
    env = {
        "CADENCE_TRUSTED_PROXIES": "",
        "CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY": "mailgun-key-for-tests",
        "CADENCE_POSTMARK_WEBHOOK_USER": "postmark",
        "CADENCE_POSTMARK_WEBHOOK_PASSWORD": "postmark-password",
    }
    with WebServer(tmp_path_factory.mktemp("bare"), web_sink, extra_env=env, log_level="info") as server:
        yield server


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(bare_web: WebServer) -> None:
    statuses = [
        httpx.post(bare_web.url("/manage"), data={}, headers={"X-Forwarded-For": fresh_ip()}).status_code
        for _ in range(25)
    ]
    assert statuses.count(429) >= 5  # one client, whatever it claims to be


def test_authenticated_webhooks_refuse_hostile_json_with_400(bare_web: WebServer) -> None:
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    response = httpx.post(
        bare_web.url("/webhooks/postmark"),
        content=deep,
        auth=("postmark", "postmark-password"),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "nested deeper" in response.json()["detail"]
    for content_type in ("application/json", "text/plain"):  # the handlers parse JSON whatever the type
        mailgun = httpx.post(bare_web.url("/webhooks/mailgun"), content=deep, headers={"Content-Type": content_type})
        assert mailgun.status_code == 400 and "nested deeper" in mailgun.json()["detail"]
    nan = httpx.post(
        bare_web.url("/webhooks/postmark"),
        content=b'{"RecordType": "Bounce", "ID": NaN}',
        auth=("postmark", "postmark-password"),
        headers={"Content-Type": "application/json"},
    )
    assert nan.status_code == 400


def test_access_logs_never_hold_a_token(bare_web: WebServer) -> None:
    _, delivery_id, link_id = bare_web.add_delivery("logged@example.com", url="https://example.org/x")
    assert link_id is not None
    tokens = [
        make_token(SECRET, "preferences", 1),
        make_token(SECRET, "webview", delivery_id),
        link_signature(SECRET, "click", delivery_id, link_id),
    ]
    httpx.get(bare_web.url(f"/p/{tokens[0]}/export"))
    httpx.get(bare_web.url(f"/v/{tokens[1]}"))
    httpx.get(bare_web.url(f"/c/{delivery_id}/{link_id}/{tokens[2]}"))
    httpx.get(bare_web.url(f"/api/preferences/{tokens[0]}"))
    deadline = time.monotonic() + 5
    while "/api/preferences/[token]" not in bare_web.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = bare_web.log()
    assert "/p/[token]/export" in log and "/v/[token]" in log and f"/c/{delivery_id}/{link_id}/[token]" in log
    for token in tokens:
        assert token not in log


def test_the_access_log_filter_is_installed_once() -> None:
    import logging

    from cadence.web.security import RedactTokens, redact_access_logs

    redact_access_logs()
    redact_access_logs()
    assert sum(isinstance(f, RedactTokens) for f in logging.getLogger("uvicorn.access").filters) == 1


# ---------------------------------------------------------------------------- in a real browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        finally:
            browser.close()


def test_a_stranger_with_a_shared_web_view_sees_no_one_and_can_only_ask_by_address(
    web: WebServer, web_sink: SmtpSink, browser_page: Any
) -> None:
    address = "ottoline.browser@example.com"
    subscribe_and_confirm(web, web_sink, address, first_name="Ottoline")
    email = parse(web_sink.messages[-1])
    page = browser_page
    page.goto(find_url(email, "/v/"))
    shown = page.inner_text("body")
    assert "Ottoline" not in shown and address not in shown and "Hi there" in shown
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert hrefs and not [h for h in hrefs if h.startswith(web.base_url) and "/manage" not in h and "/v/" not in h]
    assert page.eval_on_selector('meta[name="robots"]', "m => m.content") == ROBOTS
    page.get_by_role("link", name="Manage preferences").click()
    page.wait_for_url(f"{web.base_url}/manage")
    page.get_by_label("Email address").fill("someone.else@example.com")
    page.get_by_role("button", name="Email me the link").click()
    page.get_by_text("If this address is on our list").wait_for()
    assert messages_to(web_sink, "someone.else@example.com") == []


def test_an_api_signup_page_url_with_a_bidi_override_is_refused(web: WebServer) -> None:
    body = {
        "email": "page.url@example.com",
        "terrain": "roads",
        "training_for_race": False,
        "consent_version": "x",
        "page_url": "https://clinic.example/\u202egnp.exe",
    }
    response = httpx.post(web.url("/api/subscribe"), json=body, headers=web.from_ip())
    errors = {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}
    assert response.status_code == 422 and "U+202E" in errors[("body", "page_url")]
