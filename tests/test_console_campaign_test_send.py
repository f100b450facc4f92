"""The drip campaign page's "Send a test" with "As this subscriber" (an address or an id), as the
newsletter composer's field and ``cadence campaigns send-test --subscriber`` (the same
operation, operations/test_sends.py): in real Chromium with JavaScript off and on, against a real
``cadence web`` whose test emails reach an aiosmtpd server. The email carries the subscriber's
first name and their segment's text and goes only to the typed addresses; an unknown subscriber
is refused naming the field, nothing is sent, and the form comes back as typed."""

from __future__ import annotations

import email
import email.policy
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.models import AuditEntry
from cadence.db.session import transaction
from cadence.operations.subscribers import import_subscribers
from tests.support.composer import browser_login
from tests.support.console import Console, seed
from tests.support.keys import TEST_KEYS
from tests.support.web import WebServer

CAMPAIGN = "lower-back-pain"
PAGE = f"/admin/campaigns/{CAMPAIGN}"
QUINN = "quinn.trails@example.com"  # trails, training for a race: segment trail+race
ROBIN = "robin.road@example.com"  # roads, no race: segment everyday+no-race
TRAIL_TEXT = "Why the trails make it show"  # lesson 1's paragraph for trail runners only
RACE_TEXT = "In your training:"  # and the one for those who race


@pytest.fixture(scope="module")
def people(web: WebServer) -> dict[str, int]:
    """The console's seed (results, so the campaign page exists) and two runners."""
    seed(web)
    rows = [
        SubscriberInput(QUINN, "Quinn", "America/New_York", {"terrain": "trails", "training_for_race": "yes"}),
        SubscriberInput(ROBIN, "Robin", "America/New_York", {"terrain": "road"}),
    ]
    with transaction(web.settings.database_url) as session:
        import_subscribers(session, rows, web.clock.now(), keys=TEST_KEYS)
    ids = {}
    for address in (QUINN, ROBIN):
        found = web.subscriber(address)
        assert found is not None
        ids[address] = found.id
    return ids


def _plain_text(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert str(message["Subject"]).startswith("[TEST] ") and message["X-Cadence-Test"] == "yes"
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def _skip_previews(context: Any) -> None:
    """The campaign page's preview grid (every step x segment, twice) is not what these tests
    look at; without JavaScript Chromium loads every frame at once, which made one test 70 s."""
    context.route("**/admin/campaigns/*/preview/**", lambda route: route.abort())


def _send(page: Any, web: WebServer, *, to: str, subscriber: str, step: str = "1") -> None:
    page.goto(web.url(PAGE))
    page.get_by_label("To (addresses, separated by commas)").fill(to)
    page.get_by_label("Step", exact=True).select_option(step)
    page.get_by_label("As this subscriber").fill(subscriber)
    page.get_by_role("button", name="Send test").click()


def test_as_this_subscriber_without_javascript(web: WebServer, people: dict[str, int], browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False, extra_http_headers=web.from_ip())
    _skip_previews(context)
    page = context.new_page()
    try:
        browser_login(page, web, "tess.tester@clinic.example", "editor")
        # By address: Quinn's name and her segment (the segment list is left at "their own").
        before = len(web.sink.messages)
        _send(page, web, to="team@clinic.example", subscriber=QUINN)
        expect(page.locator("#done")).to_contain_text(
            f"Test of why-it-hurts (trail+race) with the data of {QUINN} sent to team@clinic.example."
        )
        assert page.url.startswith(web.url(PAGE))  # back on the campaign page
        arrived = web.sink.wait_for(before + 1)[before]
        assert arrived.rcpt_tos == ("team@clinic.example",)  # to the tester, never to Quinn
        text = _plain_text(arrived.data)
        assert "Quinn" in text and TRAIL_TEXT in text and RACE_TEXT in text, text
        assert "Jordan" not in text  # not the sample runner
        with transaction(web.settings.database_url) as session:  # whose data left: her id, never her address
            entry = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).one()
        assert (entry.action, entry.actor) == ("campaign.send_test", "user:tess.tester@clinic.example")
        assert entry.detail["data_of"] == f"subscriber:{people[QUINN]}" and QUINN not in str(entry.detail)

        # By id, as the subscriber pages show it: Robin, on the roads, not racing.
        before = len(web.sink.messages)
        _send(page, web, to="team@clinic.example", subscriber=str(people[ROBIN]))
        expect(page.locator("#done")).to_contain_text("(everyday+no-race) with the data of")
        text = _plain_text(web.sink.wait_for(before + 1)[before].data)
        assert "Robin" in text and TRAIL_TEXT not in text and RACE_TEXT not in text, text

        # A segment chosen by hand wins over theirs; the name is still theirs.
        before = len(web.sink.messages)
        page.goto(web.url(PAGE))
        page.get_by_role("combobox", name="Segment").select_option("trail+no-race")
        page.get_by_label("As this subscriber").fill(ROBIN)
        page.get_by_role("button", name="Send test").click()
        expect(page.locator("#done")).to_contain_text("(trail+no-race) with the data of")
        text = _plain_text(web.sink.wait_for(before + 1)[before].data)
        assert "Robin" in text and TRAIL_TEXT in text, text

        # Unknown subscribers: refused naming the field, nothing sent, the form as typed.
        for unknown in ("nobody@example.com", "999999"):
            before = len(web.sink.messages)
            with page.expect_response(lambda r: r.request.method == "POST") as posted:
                _send(page, web, to="team@clinic.example, boss@clinic.example", subscriber=unknown, step="2")
            assert posted.value.status == 400
            expect(page.locator("#error")).to_contain_text(f"As this subscriber: no subscriber '{unknown}'")
            assert page.get_by_label("As this subscriber").input_value() == unknown  # kept for correcting
            assert page.get_by_label("As this subscriber").get_attribute("aria-invalid") == "true"
            assert page.get_by_label("To (addresses, separated by commas)").input_value() == (
                "team@clinic.example, boss@clinic.example"
            )
            assert page.get_by_label("Step", exact=True).input_value() == "2"
            assert len(web.sink.messages) == before  # nothing sent

        # Without a subscriber the test is the sample runner's, as before.
        before = len(web.sink.messages)
        _send(page, web, to="team@clinic.example", subscriber="")
        expect(page.locator("#done")).to_contain_text("Test of why-it-hurts (trail+race-soon) sent to")
        assert "Jordan" in _plain_text(web.sink.wait_for(before + 1)[before].data)
    finally:
        context.close()


def test_as_this_subscriber_with_javascript(web: WebServer, people: dict[str, int], browser: Any) -> None:
    """The same form with scripts on, under the console's CSP: no violation, no dialog."""
    console = Console(browser, web)
    page = console.page
    try:
        browser_login(page, web, "jay.scripted@clinic.example", "editor")
        before = len(web.sink.messages)
        _send(page, web, to="jay.scripted@clinic.example", subscriber=QUINN.upper())  # any spelling of it
        expect(page.locator("#done")).to_contain_text("(trail+race) with the data of")
        arrived = web.sink.wait_for(before + 1)[before]
        assert arrived.rcpt_tos == ("jay.scripted@clinic.example",)
        assert "Quinn" in _plain_text(arrived.data)

        before = len(web.sink.messages)
        _send(page, web, to="jay.scripted@clinic.example", subscriber="quinn@nowhere.example")
        expect(page.locator("#error")).to_contain_text("As this subscriber: no subscriber 'quinn@nowhere.example'")
        assert page.get_by_label("As this subscriber").input_value() == "quinn@nowhere.example"
        assert len(web.sink.messages) == before
        assert console.dialogs == [] and console.csp == []
    finally:
        console.close()
