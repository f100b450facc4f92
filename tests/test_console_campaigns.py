"""The console's campaign pages and subscriber actions (issue 14) against the real ``cadence
web``, the SMTP sink and headless Chromium: an editor pauses and resumes a drip from the page
(campaign_states says so), sends a test that arrives marked [TEST], reads the seeded results;
a viewer's POSTs get 403 from the server; erasing needs an admin and the typed address; an XSS
payload in a link URL stays text. One web server and one browser for the module."""

from __future__ import annotations

import csv
import io
from email import message_from_bytes
from email.header import decode_header, make_header
from typing import Any

import pytest
from sqlalchemy import select

from cadence.db.models import AuditEntry, CampaignState, Event, Link, Subscriber, SubscriberTopic
from cadence.db.session import transaction
from cadence.operations import newsletters
from tests.support.axe import axe_script
from tests.support.console import PASSWORD, XSS_NAME, Console, new_user, seed, session_client
from tests.support.web import WebServer, csrf_token

XSS_URL = 'https://clinic.example/"><script>alert(7)</script><img src=x onerror=alert(8)>'
CAMPAIGN = "lower-back-pain"
NEWSLETTER = "clinic-news-2027-01"
EVIL = "mallory@example.com"


@pytest.fixture(scope="module")
def seeded(web: WebServer) -> dict[str, int]:
    """The console's seed (8 sent and 1 failed email of step 1, segment trail+no-race), one
    open, and a click on a link whose URL is an XSS payload."""
    ids = seed(web)
    now = web.clock.now()
    with transaction(web.settings.database_url) as session:
        link = Link(url=XSS_URL, url_hash="f" * 64)
        session.add(link)
        session.flush()
        sent = ids["delivery"] - 1  # the last sent delivery (the seed's last one failed)
        session.add(Event(subscriber_id=ids["first"], delivery_id=sent, kind="open", data={}, created_at=now))
        session.add(
            Event(subscriber_id=ids["first"], delivery_id=sent, kind="click", data={"link_id": link.id}, created_at=now)
        )
    return ids


def _state(web: WebServer, campaign_id: str) -> str | None:
    with transaction(web.settings.database_url) as session:
        row = session.get(CampaignState, campaign_id)
        return row.state if row else None


def _log_in(console: Console, web: WebServer, email: str, role: str) -> None:
    page = console.page
    page.goto(web.url(new_user(web, email, role)))
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.get_by_text("Your password is set").wait_for()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def test_an_editor_pauses_resumes_tests_and_reads_a_campaign_in_chromium(
    web: WebServer, seeded: dict[str, int], browser: Any
) -> None:
    script = axe_script()
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "eda.editor@clinic.example", "editor")
        page.get_by_role("link", name="Campaigns").click()
        page.get_by_role("heading", name="Drip campaigns").wait_for()
        console.accessible(script)
        console.shoot("campaigns")
        row = page.locator(f"#campaign-{CAMPAIGN}")
        assert "running" in row.inner_text()

        row.get_by_role("button", name=f"Pause {CAMPAIGN}").click()
        page.locator("#done").wait_for()
        assert "paused" in page.locator("#done").inner_text()
        assert _state(web, CAMPAIGN) == "paused"
        row.get_by_role("button", name=f"Resume {CAMPAIGN}").click()
        page.get_by_text("running again").wait_for()
        assert _state(web, CAMPAIGN) == "running"

        # Cancel wants the name typed: a wrong one cancels nothing.
        row.get_by_text("Cancel…").click()
        row.get_by_label(f"Type {CAMPAIGN} to cancel it").fill("lower-back")
        row.get_by_role("button", name=f"Cancel {CAMPAIGN}").click()
        assert "Nothing was cancelled" in page.locator("#error").inner_text()
        assert _state(web, CAMPAIGN) == "running"

        # Send test: to the editor's own address, marked [TEST].
        web.sink.clear()
        page.goto(web.url("/admin/campaigns"))
        page.locator(f"#campaign-{CAMPAIGN}").get_by_role("button", name=f"Send test {CAMPAIGN}").click()
        page.locator("#done").wait_for()
        assert "eda.editor@clinic.example" in page.locator("#done").inner_text()
        [mail] = web.sink.wait_for(1)
        assert mail.rcpt_tos == ("eda.editor@clinic.example",)
        subject = str(make_header(decode_header(message_from_bytes(mail.data)["Subject"])))
        assert subject.startswith("[TEST]")

        # The campaign page: the seeded numbers, the funnel, the XSS link as text.
        page.get_by_role("link", name="Lower back pain", exact=False).first.click()
        page.get_by_role("heading", name="Results per step and segment").wait_for()
        cells = page.locator("#results tbody tr").first.inner_text().split("\t")
        assert [c.strip() for c in cells[:4]] == ["1. why-it-hurts", "trail+no-race", "8", "8"]
        assert cells[4].split("\n")[:2] == ["1", "12.5 %"]  # opens, and their rate under them
        assert page.locator("svg.chart rect.bar").count() == 4
        assert page.locator("#top-links").inner_text().count(XSS_URL) == 1
        assert page.locator("#main script, #main img").count() == 0
        console.accessible(script)
        console.shoot("campaign")
        assert console.dialogs == [] and console.csp == []
    finally:
        console.close()
    with transaction(web.settings.database_url) as session:
        actions = set(
            session.scalars(select(AuditEntry.action).where(AuditEntry.actor == "user:eda.editor@clinic.example"))
        )
    assert {"campaign.pause", "campaign.resume", "campaign.send_test"} <= actions


def test_a_viewer_sees_campaigns_but_every_action_is_refused_by_the_server(
    web: WebServer, seeded: dict[str, int]
) -> None:
    viewer = session_client(web, "vic.viewer@clinic.example", "viewer")
    listing = viewer.get("/admin/campaigns")
    assert listing.status_code == 200 and CAMPAIGN in listing.text and "Pause" not in listing.text
    token = csrf_token(listing.text)
    for action in ("pause", "resume", "cancel", "test", "schedule"):
        answer = viewer.post(f"/admin/campaigns/{CAMPAIGN}/{action}", data={"csrf_token": token, "confirm": CAMPAIGN})
        assert answer.status_code == 403 and "needs the editor role" in answer.text, action
    subscriber = seeded["first"]
    for action in ("suppress", "unsuppress", "export", "erase"):
        answer = viewer.post(f"/admin/subscribers/{subscriber}/{action}", data={"csrf_token": token, "reason": "x"})
        assert answer.status_code == 403, action
    assert _state(web, CAMPAIGN) in (None, "running")
    assert viewer.get(f"/admin/campaigns/{CAMPAIGN}").status_code == 200
    assert viewer.get("/admin/campaigns/no-such-campaign").status_code == 404


def test_subscriber_actions_suppress_tag_export_and_erase_with_the_typed_address(
    web: WebServer, seeded: dict[str, int]
) -> None:
    target = seeded["evil"]  # no deliveries: the campaign test's numbers stay whatever the order
    profile = f"/admin/subscribers/{target}"
    editor = session_client(web, "ed.two@clinic.example", "editor")
    token = csrf_token(editor.get(profile).text)
    assert editor.post(f"{profile}/suppress", data={"csrf_token": token, "reason": ""}).status_code == 400
    done = editor.post(f"{profile}/suppress", data={"csrf_token": token, "reason": "asked by phone"})
    assert done.status_code == 303
    page = editor.get(profile).text
    assert "yes (staff)" in page and "Lift the suppression" in page
    assert editor.post(f"{profile}/unsuppress", data={"csrf_token": token}).status_code == 303
    assert 'Suppressed</dt><dd id="subscriber-suppressed">no' in editor.get(profile).text
    assert editor.post(f"{profile}/tags", data={"csrf_token": token, "tag": "Has Space"}).status_code == 400
    assert editor.post(f"{profile}/tags", data={"csrf_token": token, "tag": "expo"}).status_code == 303
    exported = editor.post(f"{profile}/export", data={"csrf_token": token})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["email"] for r in rows] == [EVIL] and rows[0]["tags"] == "expo"
    assert rows[0]["first_name"] == XSS_NAME  # the CSV has it as written; a spreadsheet shows text
    assert editor.post(f"{profile}/erase", data={"csrf_token": token, "confirm": EVIL}).status_code == 403

    admin = session_client(web, "ada.admin@clinic.example", "admin")
    token = csrf_token(admin.get(profile).text)
    wrong = admin.post(f"{profile}/erase", data={"csrf_token": token, "confirm": EVIL[:-4]})
    assert wrong.status_code == 400 and "Nothing was erased" in wrong.text
    erased = admin.post(f"{profile}/erase", data={"csrf_token": token, "confirm": EVIL.upper()})
    assert erased.status_code == 303 and erased.headers["location"].startswith("/admin/subscribers?done=")
    assert admin.get(profile).status_code == 404
    with transaction(web.settings.database_url) as session:
        assert session.get(Subscriber, target) is None
        by = {
            (e.actor, e.action)
            for e in session.scalars(select(AuditEntry).where(AuditEntry.target == f"subscriber:{target}"))
        }
    assert {
        ("user:ed.two@clinic.example", "subscriber.suppress"),
        ("user:ed.two@clinic.example", "subscriber.unsuppress"),
        ("user:ed.two@clinic.example", "subscribers.tag"),
        ("user:ada.admin@clinic.example", "subscriber.erase"),
    } <= by


def test_a_newsletter_is_paused_tested_and_cancelled_from_the_campaigns_page(
    web: WebServer, seeded: dict[str, int]
) -> None:
    with transaction(web.settings.database_url) as session:
        for offset in (2, 3):
            session.add(
                SubscriberTopic(subscriber_id=seeded["first"] + offset, topic="clinic-news", joined_at=web.clock.now())
            )
    editor = session_client(web, "nell.editor@clinic.example", "editor")
    token = csrf_token(editor.get("/admin/campaigns").text)
    past = editor.post(
        f"/admin/campaigns/{NEWSLETTER}/schedule", data={"csrf_token": token, "at": "2020-01-01 09:00 local"}
    )
    assert past.status_code == 400 and newsletters.status(web.settings, NEWSLETTER)["state"] == "draft"
    scheduled = editor.post(
        f"/admin/campaigns/{NEWSLETTER}/schedule", data={"csrf_token": token}, follow_redirects=True
    )
    assert f"Newsletter {NEWSLETTER} is scheduled for 2 reader(s)" in scheduled.text
    assert newsletters.status(web.settings, NEWSLETTER)["state"] == "scheduled"
    # The dashboard lists it too (a marketer's trial found scheduled newsletters nowhere there).
    board = editor.get("/admin").text
    row = board.split(f'id="newsletter-{NEWSLETTER}"')[1].split("</tr>")[0]
    assert "scheduled" in row and "<td>2</td>" in row  # its state and its two readers
    paused = editor.post(f"/admin/campaigns/{NEWSLETTER}/pause", data={"csrf_token": token}, follow_redirects=True)
    assert f"Newsletter {NEWSLETTER} is paused (2 copies paused)." in paused.text
    assert newsletters.status(web.settings, NEWSLETTER)["state"] == "paused"

    web.sink.clear()
    tested = editor.post(f"/admin/campaigns/{NEWSLETTER}/test", data={"csrf_token": token}, follow_redirects=True)
    assert "Test sent to 1 address(es)." in tested.text
    [mail] = web.sink.wait_for(1)
    assert mail.rcpt_tos == ("nell.editor@clinic.example",)
    assert str(make_header(decode_header(message_from_bytes(mail.data)["Subject"]))).startswith("[TEST]")
    bad = editor.post(f"/admin/campaigns/{NEWSLETTER}/test", data={"csrf_token": token, "to": "not-an-address"})
    assert bad.status_code == 400 and "not-an-address" in bad.text

    assert editor.post(f"/admin/campaigns/{NEWSLETTER}/cancel", data={"csrf_token": token}).status_code == 400
    done = editor.post(f"/admin/campaigns/{NEWSLETTER}/cancel", data={"csrf_token": token, "confirm": NEWSLETTER})
    assert done.status_code == 303
    assert newsletters.status(web.settings, NEWSLETTER)["state"] == "cancelled"
    assert (
        "Cancel…" not in editor.get("/admin/campaigns").text.split(f'id="newsletter-{NEWSLETTER}"')[1].split("</tr>")[0]
    )
    # The "what happened" sentence is signed for the session: a link cannot put words there.
    spoof = editor.get("/admin/campaigns", params={"done": "Session expired: log in at evil.example", "sig": "0" * 32})
    assert spoof.status_code == 200 and "evil.example" not in spoof.text
    missing = editor.post("/admin/campaigns/no-such-thing/pause", data={"csrf_token": token})
    assert missing.status_code == 404 and "no campaign" in missing.text.lower()
