"""The newsletter composer (issue 14) in real Chromium against a real ``cadence web``: the live
preview in sandboxed frames at 375 and 600 px, live recipient counts, XSS payloads inert, a draft
never lost (a version conflict, an expired session, a refused save, a save that never reached the
server), a viewer who reads only (403 from the server for every write), and the page without
JavaScript. One web server (SQLite, its SMTP sink) and one browser for the module; the whole
journey with PostgreSQL, Redis and a worker is tests/test_console_journey.py."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from cadence.operations import newsletter_drafts as drafts
from tests.support.axe import axe_script
from tests.support.composer import (
    XSS_BODY,
    XSS_SUBJECT,
    browser_login,
    compose,
    editor_client,
    for_race_trainees,
    readers,
)
from tests.support.console import PASSWORD, Console, log_in, new_user, set_password
from tests.support.web import WebServer, csrf_token


@pytest.fixture(scope="module")
def seeded(web: WebServer) -> None:
    readers(web.settings, web.clock.now(), racing=3, other=2)


@pytest.fixture
def console(browser: Any, web: WebServer) -> Iterator[Console]:
    opened = Console(browser, web)
    try:
        yield opened
    finally:
        opened.close()


def _draft(web: WebServer, name: str, body: str = "The first text.") -> None:
    """A stored draft made by the operation itself (a colleague's, in effect)."""
    fields = {
        "based_on": "lower-back-pain",
        "subject": f"About {name}",
        "preheader": "A short note from the clinic",
        "body": body,
        "audience": {"topics": ["clinic-news"]},
        "send_at": "now",
    }
    drafts.create(web.settings, name, fields, actor="cli:test", now=web.clock.now())


def _key(page: Any, which: str = "draftKey") -> str:
    """This page's localStorage key for its draft (`newKey`: for a new one), per user."""
    return str(page.locator("#composer").evaluate(f"form => form.dataset.{which}"))


def _kept(page: Any, which: str = "draftKey") -> str:
    return str(page.evaluate("k => localStorage.getItem(k) || ''", _key(page, which)))


def test_an_editor_writes_with_a_live_preview_and_live_counts_and_nothing_in_it_runs(
    web: WebServer, seeded: None, console: Console
) -> None:
    page = console.page
    browser_login(page, web, "cora.composer@clinic.example", "editor")
    page.get_by_role("link", name="Newsletters").click()
    page.get_by_role("link", name="Write a new newsletter").click()
    compose(page, name="race-week", subject=XSS_SUBJECT, preheader="Taper, sleep and your back", body=XSS_BODY)

    # The preview follows the typing, in the newsletter layout, at both widths.
    for which in ("phone", "desktop"):
        frame = page.frame_locator(f'iframe[data-preview="{which}"]')
        expect(frame.locator("body")).to_contain_text("Race week starts now", timeout=15_000)
        expect(frame.locator("body")).to_contain_text("<script>alert('body')</script>")  # shown, as text
    sizes = page.locator("iframe[data-preview]").evaluate_all(
        "frames => frames.map(f => [f.getAttribute('sandbox'), f.clientWidth])"
    )
    assert sizes == [["", 375], ["", 600]]  # sandboxed: no allow-scripts, no allow-same-origin

    # The counts follow the audience: the topic (5 readers), then only those training for a race.
    page.get_by_label("Clinic news").check()
    expect(page.locator("#count-total")).to_have_text("5")
    for_race_trainees(page)
    expect(page.locator("#count-total")).to_have_text("3")
    assert "3 recipient(s)" in page.locator("#count-status").inner_text()

    console.accessible(axe_script())
    console.shoot("composer")
    page.locator("#save").click()
    expect(page.locator("#done")).to_have_text("Saved race-week, version 1.")
    assert page.url.startswith(web.url("/admin/newsletters/race-week?"))
    assert page.locator("#subject").input_value() == XSS_SUBJECT
    assert _kept(page, "newKey") == "" and _kept(page) == ""  # the server has it all

    before = len(web.sink.messages)
    page.locator("#test_to").fill("team@clinic.example")
    page.locator("#send-test").click()
    expect(page.locator("#done")).to_contain_text("sent a test to 1 address(es): team@clinic.example")
    arrived = web.sink.wait_for(before + 1)[before]
    message = email.message_from_bytes(arrived.data, policy=email.policy.default)
    assert arrived.rcpt_tos == ("team@clinic.example",) and message["Subject"] == f"[TEST] {XSS_SUBJECT}"

    page.goto(web.url("/admin/subscribers?q=reader-race0"))  # the reader named <img onerror=...>
    assert console.dialogs == [] and console.csp == []


def test_a_version_conflict_shows_both_versions_and_keeps_the_text(
    web: WebServer, seeded: None, console: Console
) -> None:
    _draft(web, "conflict-demo", "Version one.")
    page = console.page
    browser_login(page, web, "ada.editor@clinic.example", "editor")
    page.goto(web.url("/admin/newsletters/conflict-demo"))
    page.locator("#body").fill("Ada's careful text.")

    colleague = editor_client(web, "bea.editor@clinic.example")  # saves first
    form = colleague.get("/admin/newsletters/conflict-demo").text
    saved = colleague.post(
        "/admin/newsletters/conflict-demo",
        data={
            "csrf_token": csrf_token(form),
            "expected_version": "1",
            "subject": "Bea's subject",
            "body": "Bea's text. <script>alert('bea')</script>",
            "topics": "clinic-news",
            "send_mode": "now",
        },
    )
    assert saved.status_code == 303

    page.locator("#save").click()
    expect(page.locator("#conflict")).to_be_visible()
    assert page.locator("#theirs-body").inner_text() == "Bea's text. <script>alert('bea')</script>"
    assert page.locator("#theirs-subject").inner_text() == "Bea's subject"
    assert page.locator("#yours-body").inner_text() == "Ada's careful text."
    assert page.locator("#body").input_value() == "Ada's careful text."
    assert drafts.get(web.settings, "conflict-demo").fields["body"].startswith("Bea's text.")  # not overwritten
    console.accessible(axe_script())

    page.locator("#save").click()  # having seen theirs: hers replaces it, as version 3
    expect(page.locator("#done")).to_have_text("Saved version 3.")
    assert drafts.get(web.settings, "conflict-demo").fields["body"] == "Ada's careful text."
    assert _kept(page) == ""
    page.get_by_role("link", name="All newsletters").click()
    expect(page.locator("#draft-conflict-demo")).to_contain_text("ada.editor@clinic.example")
    console.accessible(axe_script())
    assert console.dialogs == [] and console.csp == []


def test_an_expired_session_loses_no_text(web: WebServer, seeded: None, console: Console) -> None:
    _draft(web, "expiry-demo")
    page = console.page
    browser_login(page, web, "eve.editor@clinic.example", "editor")
    page.goto(web.url("/admin/newsletters/expiry-demo"))
    page.locator("#body").fill("Text typed before a long lunch.")
    page.wait_for_function("k => (localStorage.getItem(k) || '').includes('long lunch')", arg=_key(page))

    web.clock.advance(timedelta(minutes=31))  # past the 30 minutes a session may sit idle
    other = console.context.new_page()  # the draft opened in another tab now: the login leads back
    other.goto(web.url("/admin/newsletters/expiry-demo"))
    assert other.url == web.url("/admin/login?next=/admin/newsletters/expiry-demo")
    other.close()
    page.locator("#save").click()
    expect(page.locator("#expired")).to_contain_text("Text typed before a long lunch.")  # shown back
    assert drafts.get(web.settings, "expiry-demo").version == 1

    page.locator("#log-in-again").click()  # ... and back to the draft, where this browser kept it
    expect(page.locator("#return-to")).to_be_visible()
    page.get_by_label("Email address").fill("eve.editor@clinic.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#restored")).to_be_visible()
    assert page.url == web.url("/admin/newsletters/expiry-demo")
    assert page.locator("#body").input_value() == "Text typed before a long lunch."
    page.locator("#save").click()
    expect(page.locator("#done")).to_have_text("Saved version 2.")
    assert drafts.get(web.settings, "expiry-demo").fields["body"] == "Text typed before a long lunch."
    assert _kept(page) == ""


def test_a_refused_save_shows_the_error_and_a_lost_one_comes_back(
    web: WebServer, seeded: None, console: Console
) -> None:
    _draft(web, "failing-demo")
    page = console.page
    browser_login(page, web, "fay.editor@clinic.example", "editor")
    page.goto(web.url("/admin/newsletters/failing-demo"))

    # Refused by the server: the error names the field, the text stays in the form.
    page.locator("#body").fill("Words worth keeping.")
    page.get_by_label("At one moment for everyone").check()
    page.locator("#send_instant").fill("2027-01-12T09:00")
    page.locator("#send_zone").fill("Mars/Olympus_Mons")
    page.locator("#save").click()
    expect(page.locator("#error")).to_contain_text("send_at")
    assert page.locator("#body").input_value() == "Words worth keeping."
    assert drafts.get(web.settings, "failing-demo").version == 1

    # Never reached the server (the network dropped): the next visit offers the text back.
    page.locator("#send_zone").fill("America/New_York")
    page.locator("#body").fill("Words worth keeping, take two.")
    page.wait_for_function("k => (localStorage.getItem(k) || '').includes('take two')", arg=_key(page))

    def drop(route: Any) -> None:
        if route.request.method == "POST":
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/admin/newsletters/failing-demo", drop)
    with pytest.raises(Exception), page.expect_navigation():  # noqa: B017 - the browser's navigation error
        page.locator("#save").click()
    page.unroute("**/admin/newsletters/failing-demo")
    page.goto(web.url("/admin/newsletters/failing-demo"))
    expect(page.locator("#restored")).to_be_visible()
    assert page.locator("#body").input_value() == "Words worth keeping, take two."
    page.locator("#save").click()
    expect(page.locator("#done")).to_have_text("Saved version 2.")


def test_a_viewer_reads_and_every_write_is_refused_by_the_server(
    web: WebServer, seeded: None, console: Console
) -> None:
    _draft(web, "viewer-demo")
    page = console.page
    browser_login(page, web, "val.viewer@clinic.example", "viewer")
    page.goto(web.url("/admin/newsletters/viewer-demo"))
    expect(page.locator("#read-only")).to_be_visible()
    assert page.locator("#save, #schedule, #send-test, #count-button").count() == 0
    assert page.locator("#body").is_disabled()
    expect(page.frame_locator('iframe[data-preview="phone"]').locator("body")).to_contain_text("The first text.")

    viewer = editor_client(web, "vic.viewer@clinic.example", "viewer")
    token = csrf_token(viewer.get("/admin/newsletters/viewer-demo").text)
    data = {
        "csrf_token": token,
        "expected_version": "1",
        "body": "Changed.",
        "topics": "clinic-news",
        "send_mode": "now",
    }
    for path in ("", "/test", "/schedule"):
        answer = viewer.post(f"/admin/newsletters/viewer-demo{path}", data=data)
        assert answer.status_code == 403 and "needs the editor role" in answer.text, path
    for path in ("/admin/newsletters/new", "/admin/newsletters/preview", "/admin/newsletters/count"):
        assert viewer.post(path, data={**data, "new_id": "sneaky"}).status_code == 403, path
    assert viewer.get("/admin/newsletters/new").status_code == 403
    assert drafts.get(web.settings, "viewer-demo").version == 1
    assert console.dialogs == [] and console.csp == []


def test_without_javascript_saving_shows_the_preview_and_the_counts_come_from_the_server(
    web: WebServer, seeded: None, browser: Any
) -> None:
    context = browser.new_context(java_script_enabled=False, extra_http_headers=web.from_ip())
    page = context.new_page()
    try:
        browser_login(page, web, "nora.nojs@clinic.example", "editor")
        page.goto(web.url("/admin/newsletters/new"))
        compose(page, name="no-script", subject="Plain and simple", preheader="No script needed", body="Hello **you**.")
        for_race_trainees(page)
        page.locator("#count-button").click()
        expect(page.locator("#count-total")).to_have_text("3")
        assert page.locator("#body").input_value() == "Hello **you**."  # the text came back with the counts
        with context.expect_page() as opened:
            page.locator("#preview-button").click()  # the unsaved text, in a tab of its own
        expect(opened.value.locator("body")).to_contain_text("Hello you.")
        opened.value.close()
        page.locator("#save").click()
        expect(page.locator("#done")).to_have_text("Saved no-script, version 1.")
        frame = page.frame_locator('iframe[data-preview="desktop"]')
        expect(frame.locator("body")).to_contain_text("Hello you.")
    finally:
        context.close()

    client = editor_client(web, "pat.preview@clinic.example", "viewer")
    answer = client.get("/admin/newsletters/no-script/preview?version=1")
    policy = answer.headers["content-security-policy"]
    assert answer.status_code == 200 and "Hello <strong>you</strong>" in answer.text
    for directive in ("sandbox", "script-src 'none'", "frame-ancestors 'self'"):
        assert directive in policy
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    assert client.get("/admin/newsletters/no-script/preview?version=9").status_code == 404


def test_a_long_issue_saves_and_a_form_from_an_earlier_session_gives_its_text_back(
    web: WebServer, seeded: None
) -> None:
    _draft(web, "long-demo")
    client = editor_client(web, "lou.long@clinic.example")
    token = csrf_token(client.get("/admin/newsletters/long-demo").text)
    # ~95,000 characters, many of them 2- and 4-byte UTF-8: far past the 8 KB of other forms.
    body = "Étirements et hanches 🏃 — " * 3_500
    form = {"csrf_token": token, "expected_version": "1", "body": body, "topics": "clinic-news", "send_mode": "now"}
    saved = client.post("/admin/newsletters/long-demo", data=form)
    assert saved.status_code == 303, saved.text[:300]
    assert drafts.get(web.settings, "long-demo").fields["body"] == body

    too_long = client.post("/admin/newsletters/long-demo", data={**form, "expected_version": "2", "body": body * 2})
    assert too_long.status_code == 400 and "body" in too_long.text  # refused by name, the text in the form
    assert body[:200] in too_long.text
    huge = client.post("/admin/newsletters/long-demo", data={**form, "body": "x" * 3_000_000})
    assert huge.status_code == 413  # the composer's own cap (web/body_guard.py), still a cap

    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    assert log_in(client, "lou.long@clinic.example").status_code == 303  # a new session, a new token
    stale = client.post(
        "/admin/newsletters/long-demo", data={**form, "expected_version": "2", "body": "Kept <b>me</b>"}
    )
    assert stale.status_code == 403 and "Form expired" in stale.text
    assert "Kept &lt;b&gt;me&lt;/b&gt;" in stale.text
    assert drafts.get(web.settings, "long-demo").version == 2


def test_scheduling_needs_a_chosen_send_time_not_an_empty_day(web: WebServer, seeded: None) -> None:
    _draft(web, "when-demo")
    client = editor_client(web, "wes.when@clinic.example")
    token = csrf_token(client.get("/admin/newsletters/when-demo").text)
    form = {
        "csrf_token": token,
        "expected_version": "1",
        "subject": "About when-demo",
        "preheader": "A short note from the clinic",
        "body": "The first text.",
        "topics": "clinic-news",
        "send_mode": "local",
        "send_local": "",
    }
    refused = client.post("/admin/newsletters/when-demo/schedule", data=form)
    assert refused.status_code == 400 and "give the date and time" in refused.text
    assert drafts.get(web.settings, "when-demo").state == "draft"
    scheduled = client.post("/admin/newsletters/when-demo/schedule", data={**form, "send_local": "2026-12-08T09:00"})
    assert scheduled.status_code == 303, scheduled.text[:500]
    shown = client.get(scheduled.headers["location"]).text
    assert "is scheduled for 5 reader(s), sending at 2026-12-08 09:00 local" in shown
    assert drafts.get(web.settings, "when-demo").state == "scheduled"
    assert 'id="save"' not in shown  # locked: read-only from now on


def test_a_save_keeps_the_fields_the_composer_does_not_show(web: WebServer, seeded: None) -> None:
    fields = {
        "based_on": "lower-back-pain",
        "name": "Race week, December",
        "issue_date": "December 2026",
        "cta": {"url": "https://precisionbodywork.example/book", "label": "Book a visit"},
        "subject": "Set by the API",
        "audience": {"topics": ["clinic-news"]},
    }
    drafts.create(web.settings, "api-made", fields, actor="token:test", now=web.clock.now())
    client = editor_client(web, "kim.keeps@clinic.example")
    token = csrf_token(client.get("/admin/newsletters/api-made").text)
    form = {"csrf_token": token, "expected_version": "1", "based_on": "lower-back-pain", "subject": "Edited here"}
    assert client.post("/admin/newsletters/api-made", data={**form, "topics": "clinic-news"}).status_code == 303
    saved = drafts.get(web.settings, "api-made").fields
    assert saved["subject"] == "Edited here"
    assert (saved["name"], saved["issue_date"], saved["cta"]) == (fields["name"], fields["issue_date"], fields["cta"])


def test_a_login_leads_back_only_to_a_composer_page(web: WebServer, seeded: None) -> None:
    for n, (asked, lands) in enumerate(
        [
            ("/admin/newsletters/some-draft", "/admin/newsletters/some-draft"),
            ("/admin/newsletters/new", "/admin/newsletters/new"),
            ("https://evil.example/admin/newsletters", "/admin"),
            ("//evil.example/admin/newsletters/x", "/admin"),
            ("/admin/newsletters/../users", "/admin"),
            ("/admin/newsletters/x\\evil", "/admin"),
        ]
    ):
        email = f"olga{n}.open@clinic.example"  # one account each: the login limit counts per account
        with web.client() as client:
            set_password(client, new_user(web, email, "editor"))
            form = client.get("/admin/login", params={"next": asked})
            answer = client.post(
                "/admin/login",
                data={
                    "csrf_token": csrf_token(form.text),
                    "email": email,
                    "password": PASSWORD,
                    "next": asked,
                },
            )
            assert (answer.status_code, answer.headers["location"]) == (303, lands), asked


def test_with_a_code_app_the_login_still_leads_back_to_the_draft(web: WebServer, seeded: None) -> None:
    client = editor_client(web, "tia.totp@clinic.example")
    page = client.get("/admin/account").text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)  # type: ignore[union-attr]
    totp = pyotp.TOTP(secret)
    now = web.clock.now()
    form = {"csrf_token": csrf_token(page), "secret": secret, "code": totp.at(now), "current_password": PASSWORD}
    assert client.post("/admin/account/totp", data=form).status_code == 303
    fresh = web.client()
    login = fresh.get("/admin/login", params={"next": "/admin/newsletters/a-draft"}).text
    first = fresh.post(
        "/admin/login",
        data={
            "csrf_token": csrf_token(login),
            "email": "tia.totp@clinic.example",
            "password": PASSWORD,
            "next": "/admin/newsletters/a-draft",
        },
    )
    assert first.headers["location"] == "/admin/login/code?next=/admin/newsletters/a-draft"
    code_page = fresh.get(first.headers["location"]).text
    assert 'name="next" value="/admin/newsletters/a-draft"' in code_page  # carried by the code form
    later = totp.at(now + timedelta(seconds=30))
    done = fresh.post(
        "/admin/login/code",
        data={"csrf_token": csrf_token(code_page), "code": later, "next": "/admin/newsletters/a-draft"},
    )
    assert done.headers["location"] == "/admin/newsletters/a-draft"


def test_the_composer_fits_a_phone_once_the_counts_are_in(web: WebServer, seeded: None, console: Console) -> None:
    """At 375 px the form scrolls down, never sideways: a fieldset is as wide as its widest
    content by default (min-inline-size: min-content, HTML's rendering rules), so the segments
    table with its counts pushed the audience part 30 px past the screen (found by trying it on
    a phone). The previews scroll inside their own frames' boxes."""
    page = console.page
    browser_login(page, web, "pia.phone@clinic.example", "editor")
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(web.url("/admin/newsletters/new"))
    compose(page, name="race-phone", subject="Race week", preheader="Taper, sleep and your back", body="Hi.")
    for_race_trainees(page)
    page.locator('#segments input[value="trail+race-soon"]').check()
    expect(page.locator("#count-total")).not_to_have_text("–")
    overflowing = page.evaluate(
        """() => [...document.querySelectorAll('#composer *')]
              .filter(el => !el.closest('.previews figure'))  // each preview scrolls in its own box
              .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
              .map(el => el.tagName + (el.id ? '#' + el.id : ''))"""
    )
    assert overflowing == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_the_body_hint_says_the_greeting_is_added_and_placeholders_are_not_filled(web: WebServer, seeded: None) -> None:
    """Trying it cold, a marketer wrote "Hi {{ first_name }}," and got "Hi Jordan," then the
    braces as typed (a stored body is Markdown only, kept inside {% raw %}): the label says so."""
    client = editor_client(web, "gil.greeting@clinic.example", "editor")
    answer = client.get("/admin/newsletters/new")
    assert answer.status_code == 200
    label = re.search(r'<label for="body">(.*?)</label>', answer.text, re.S)
    assert label is not None
    assert "added for you" in label.group(1) and "{{ … }}</code> is shown as typed" in label.group(1)


def test_a_test_send_as_a_chosen_subscriber_works_without_javascript(
    web: WebServer, seeded: None, browser: Any
) -> None:
    """Results item 4: "as this subscriber" (address or id) fills the test with their data, as
    `cadence newsletters send-test --subscriber` does; an unknown one is refused by name and
    nothing is sent. A plain form field: no JavaScript needed."""
    _draft(web, "as-reader", body="A note for you.")
    easy = web.subscriber("reader-easy1@example.com")
    assert easy is not None
    context = browser.new_context(java_script_enabled=False, extra_http_headers=web.from_ip())
    page = context.new_page()
    try:
        browser_login(page, web, "sam.subscriber@clinic.example", "editor")
        for chosen in ("reader-easy1@example.com", str(easy.id)):
            page.goto(web.url("/admin/newsletters/as-reader"))
            before = len(web.sink.messages)
            page.locator("#test_to").fill("team@clinic.example")
            page.get_by_label("As this subscriber").fill(chosen)
            page.locator("#send-test").click()
            expect(page.locator("#done")).to_contain_text(f"sent a test with the data of {chosen} to 1 address(es)")
            arrived = web.sink.wait_for(before + 1)[before]
            assert arrived.rcpt_tos == ("team@clinic.example",)  # to the tester, never to the reader
            message = email.message_from_bytes(arrived.data, policy=email.policy.default)
            text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            assert "Hi Easy1," in text and "Jordan" not in text, text

        for unknown in ("nobody@example.com", "999999"):
            page.goto(web.url("/admin/newsletters/as-reader"))
            before = len(web.sink.messages)
            page.get_by_label("As this subscriber").fill(unknown)
            page.locator("#send-test").click()
            expect(page.locator("#error")).to_contain_text(f"As this subscriber: no subscriber '{unknown}'")
            assert page.get_by_label("As this subscriber").input_value() == unknown  # kept for correcting
            assert len(web.sink.messages) == before  # nothing sent
    finally:
        context.close()
