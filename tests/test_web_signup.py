"""Signing up through the form: double opt-in, CSRF, rate limits, the honeypot, and answers that
say nothing about whether an address is already known."""

from __future__ import annotations

import time

import httpx

from cadence.core.tokens import make_token
from tests.support.smtpd import ReceivedMessage, SmtpSink
from tests.support.web import SECRET, WebServer, csrf_token, find_url, fresh_ip, parse, signup_form


def to(web_sink: SmtpSink, address: str, settle: float = 0.5, expect: int = 1) -> list[ReceivedMessage]:
    """Messages the web_sink received for `address`: waits (up to 20 s, polling) for `expect` of
    them, since the web process sends after answering and a loaded machine delays it (a fixed
    0.5 s wait failed in CI), then `settle` more seconds so that an extra copy would show."""
    def received() -> list[ReceivedMessage]:
        return [m for m in web_sink.messages if address.lower() in (r.lower() for r in m.rcpt_tos)]

    deadline = time.monotonic() + 20
    while len(received()) < expect and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle)
    return received()


def form_client(web: WebServer) -> tuple[httpx.Client, str]:
    client = web.client()
    return client, csrf_token(client.get("/subscribe").text)


def sign_up(client: httpx.Client, token: str, ip: str | None = None, **fields: str) -> httpx.Response:
    data = {"csrf_token": token, **signup_form(**fields)}
    return client.post("/subscribe", data=data, headers={"X-Forwarded-For": ip or fresh_ip()})


def unsubscribe(web: WebServer, subscriber_id: int) -> None:
    token = make_token(SECRET, "unsubscribe", [subscriber_id, 0])
    httpx.post(web.url(f"/u/{token}"), data={"List-Unsubscribe": "One-Click"}).raise_for_status()


def confirm(web: WebServer, url: str) -> httpx.Response:
    client = web.client()
    page = client.get(url.removeprefix(web.base_url))
    return client.post(url.removeprefix(web.base_url), data={"csrf_token": csrf_token(page.text)})


def test_a_signup_stays_pending_and_gets_exactly_one_email_with_only_our_text(
    web: WebServer, web_sink: SmtpSink
) -> None:
    client, token = form_client(web)
    typed = "Buy cheap watches at spam.example"
    response = sign_up(client, token, email="new.runner@example.com", first_name=typed)
    assert response.status_code == 200 and "Check your inbox" in response.text
    [message] = to(web_sink, "new.runner@example.com")
    assert typed.encode() not in message.data and b"spam.example" not in message.data
    parsed = parse(message)
    assert parsed["To"] == "new.runner@example.com"  # no display name: that would be typed text
    subscriber = web.subscriber("new.runner@example.com")
    assert subscriber is not None and subscriber.status == "pending" and subscriber.first_name == typed
    assert subscriber.attributes == {"terrain": "trails", "training_for_race": "no"}


def test_confirming_activates_records_consent_and_enrolls(web: WebServer, web_sink: SmtpSink) -> None:
    client, token = form_client(web)
    sign_up(
        client,
        token,
        "203.0.113.9",
        email="confirm.me@example.com",
        terrain="roads",
        training_for_race="yes",
        race_month="2027-04",
    )
    [message] = to(web_sink, "confirm.me@example.com")
    url = find_url(parse(message), "/confirm/")
    assert web.subscriber("confirm.me@example.com").status == "pending"  # type: ignore[union-attr]
    response = confirm(web, url)
    assert response.status_code == 200 and "You're subscribed" in response.text
    subscriber = web.subscriber("confirm.me@example.com")
    assert subscriber is not None and subscriber.status == "active"
    assert subscriber.attributes["race_month"] == "2027-04"
    consent = subscriber.consent
    assert consent["ip"] == "203.0.113.9" and consent["form_id"] == "web:subscribe"
    assert consent["page_url"] == web.url("/subscribe") and len(consent["wording_sha256"]) == 64
    assert consent["confirmed_at"] == web.clock.now().isoformat() and consent["confirmed_ip"]
    # Enrolled: the first step goes out on the next tick (inside the send window).
    assert web.drive() == 1
    # The same link again: nothing new, no second enrollment.
    assert "already subscribed" in confirm(web, url).text
    assert web.drive() == 0


def test_a_used_confirmation_link_cannot_resubscribe_after_an_unsubscribe(web: WebServer, web_sink: SmtpSink) -> None:
    client, token = form_client(web)
    sign_up(client, token, email="changes.mind@example.com")
    [first] = to(web_sink, "changes.mind@example.com")
    url = find_url(parse(first), "/confirm/")
    confirm(web, url)
    subscriber = web.subscriber("changes.mind@example.com")
    assert subscriber is not None
    unsubscribe(web, subscriber.id)
    assert web.subscriber("changes.mind@example.com").status == "unsubscribed"  # type: ignore[union-attr]
    response = confirm(web, url)
    assert response.status_code == 404
    assert web.subscriber("changes.mind@example.com").status == "unsubscribed"  # type: ignore[union-attr]


def test_fifty_signups_of_one_address_in_a_minute_send_at_most_one_confirmation(
    web: WebServer, web_sink: SmtpSink
) -> None:
    client, token = form_client(web)
    for i in range(50):  # from fifty IPs, so the per-IP limit is not what stops them
        address = "Victim@Example.com" if i % 2 else "victim@example.com"
        assert sign_up(client, token, email=address).status_code == 200
    assert len(to(web_sink, "victim@example.com", settle=1.0)) == 1


def test_a_hundred_posts_from_one_ip_get_429_beyond_twenty_a_minute(web: WebServer, web_sink: SmtpSink) -> None:
    client, token = form_client(web)
    ip = fresh_ip()
    codes = [sign_up(client, token, ip, email=f"flood{i}@example.com").status_code for i in range(100)]
    assert codes[:20] == [200] * 20
    assert codes[20:] == [429] * 80
    limited = sign_up(client, token, ip, email="one.more@example.com")
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert len(to(web_sink, "flood99@example.com", expect=0)) == 0
    # Another IP is not affected.
    assert sign_up(client, token, email="someone.else@example.com").status_code == 200


def test_a_filled_honeypot_gets_the_same_page_and_no_email(web: WebServer, web_sink: SmtpSink) -> None:
    client, token = form_client(web)
    normal = sign_up(client, token, email="human@example.com")
    bot = sign_up(client, token, email="bot@example.com", website="http://spam.example")
    assert bot.status_code == normal.status_code == 200
    assert bot.content == normal.content
    assert to(web_sink, "bot@example.com", expect=0) == [] and web.subscriber("bot@example.com") is None


def test_new_pending_active_and_unsubscribed_addresses_get_byte_identical_answers(web: WebServer) -> None:
    client, token = form_client(web)
    sign_up(client, token, email="pending.one@example.com")
    web.add_delivery("active.one@example.com")
    gone_id, _, _ = web.add_delivery("gone.one@example.com")
    unsubscribe(web, gone_id)
    answers = [
        sign_up(client, token, email=address)
        for address in (
            "brand.new@example.com",
            "pending.one@example.com",
            "active.one@example.com",
            "gone.one@example.com",
        )
    ]
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert all("set-cookie" not in r.headers for r in answers)
    # Nor does the time taken: every answer waits for the same floor (WebLimits.signup_floor_seconds).
    assert all(r.elapsed.total_seconds() >= 0.05 for r in answers)
    assert web.subscriber("active.one@example.com").status == "active"  # type: ignore[union-attr]


def test_form_posts_without_a_valid_csrf_token_are_refused(web: WebServer) -> None:
    client, token = form_client(web)
    _, other_token = form_client(web)
    data = signup_form(email="csrf@example.com")
    attempts = [
        client.post("/subscribe", data=data),  # no token
        client.post("/subscribe", data={**data, "csrf_token": "forged"}),
        client.post("/subscribe", data={**data, "csrf_token": other_token}),  # another browser's token
        httpx.post(web.url("/subscribe"), data={**data, "csrf_token": token}),  # token without its cookie
        client.post("/subscribe", data={**data, "csrf_token": token}, headers={"Origin": "https://evil.example"}),
    ]
    assert [r.status_code for r in attempts] == [403] * 5
    assert web.subscriber("csrf@example.com") is None
    assert client.post("/subscribe", data={**data, "csrf_token": token}).status_code == 200


def test_invalid_answers_redisplay_the_form_with_every_problem(web: WebServer) -> None:
    client, token = form_client(web)
    response = sign_up(
        client, token, email="not-an-address", terrain="moon", training_for_race="maybe", race_month="soon"
    )
    assert response.status_code == 400
    for field in ("email", "terrain", "training_for_race", "race_month"):
        assert f'href="#{field}"' in response.text
    assert 'value="not-an-address"' in response.text and csrf_token(response.text)
