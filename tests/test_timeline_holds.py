"""Two gaps a review found in the subscriber timeline (operations/subscriber_tools.pending_outlook):

1. While staff pause a drip campaign (`cadence campaigns pause`) or a newsletter, its emails not
   sent yet read "scheduled for <time>", yet the send path holds them until the resume: they
   read "held" ("campaign paused" / "newsletter paused") now, and "scheduled" again after it.
2. A subscriber without a time zone saw the time labelled UTC although the send path reads it
   in the campaign's zone (core.schedule.subscriber_zone): the label is that zone now, so the
   local time shown is the one the email goes at.

Through the real doors: the installed `cadence` (table and --json), the staff API over HTTP,
the console subscriber page in Chromium (the shared `browser` fixture). Time moves by the file
clock only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.console import Console
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer
from tests.test_cli import cadence
from tests.test_console_campaigns import _log_in
from tests.test_exit_goal import CAMPAIGN, call, env_of

NEWSLETTER = "clinic-news-2027-01"  # "2027-01-12 09:00 local", based on lower-back-pain
NEW_YORK = ZoneInfo("America/New_York")  # lower-back-pain's zone, for subscribers without one
DEE = "dee@example.com"  # no time zone of her own


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    with WebServer(tmp_path_factory.mktemp("timeline-holds"), web_sink) as server:
        yield server


@pytest.fixture(scope="module")
def queued(web: WebServer) -> dict[str, Any]:
    """Dee (no zone) gets lesson 1; a later tick queues lesson 2 (the workers have not run);
    the clinic news is scheduled for her too."""
    from cadence.db.models import SubscriberTopic
    from cadence.db.session import transaction
    from cadence.operations import enrollment as engine

    env = env_of(web)
    added = cadence(env, "subscribers", "add", DEE, "--attr", "terrain=roads")
    assert added.status == 0, added
    assert cadence(env, "campaigns", "enroll", CAMPAIGN, "--all").status == 0
    assert web.drive() == 1  # lesson 1
    dee = web.subscriber(DEE)
    assert dee is not None and dee.timezone is None
    with transaction(web.settings.database_url) as session:
        session.add(SubscriberTopic(subscriber_id=dee.id, topic="clinic-news", joined_at=web.clock.now()))
    scheduled = cadence(env, "newsletters", "schedule", NEWSLETTER)
    assert scheduled.status == 0, scheduled
    ticked: list[Any] = []
    for _ in range(6):  # lesson 2 is due a few days later, in the send window
        web.clock.advance(timedelta(days=1))
        ticked += [i for batch in engine.tick(web.runtime).batches for i in batch]
        if ticked:
            break
    assert len(ticked) == 1, ticked
    made = cadence(env, "tokens", "add", "front-desk", "--scope", "write", "--json")
    assert made.status == 0, made
    return {"id": dee.id, "token": json.loads(made.out)["token"]}


def _lesson_due(web: WebServer) -> datetime:
    from sqlalchemy import select

    from cadence.db.models import Delivery
    from cadence.db.session import transaction

    with transaction(web.settings.database_url) as session:
        lesson = select(Delivery).where(Delivery.campaign_id == CAMPAIGN, Delivery.state == "queued")
        return session.scalars(lesson).one().not_before


def _shown(web: WebServer) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Dee's lesson 2 and newsletter lines, as `subscribers show --json` gives them, and the
    table's lines of both."""
    env = env_of(web)
    shown = cadence(env, "subscribers", "show", DEE, "--json")
    assert shown.status == 0 and "Traceback" not in shown.err, shown
    timeline = json.loads(shown.out)["timeline"]
    lesson = next(t for t in timeline if t["campaign"] == CAMPAIGN and t["what"] not in ("sent", "open", "click"))
    copy = next(t for t in timeline if t["campaign"] == NEWSLETTER)
    table = cadence(env, "subscribers", "show", DEE)
    assert table.status == 0 and "Traceback" not in table.err, table
    unsent = [x for x in table.out.splitlines() if "(" in x and "UTC  sent " not in x]
    lines = [x for x in unsent if NEWSLETTER in x or CAMPAIGN in x]
    return lesson, copy, lines


def _api(web: WebServer, queued: dict[str, Any]) -> list[dict[str, Any]]:
    answer = call(web, "GET", f"/api/admin/subscribers/{DEE}", queued["token"])
    assert answer.status_code == 200, answer.text
    timeline: list[dict[str, Any]] = answer.json()["timeline"]
    return timeline


def test_a_subscriber_without_a_zone_sees_the_campaigns_zone(web: WebServer, queued: dict[str, Any]) -> None:
    due = _lesson_due(web).astimezone(NEW_YORK)
    assert 7 <= due.hour < 9  # the send window, read in New York: the time the send path uses
    lesson, copy, lines = _shown(web)
    assert (lesson["what"], lesson["detail"]) == ("scheduled", f"for {due:%Y-%m-%d %H:%M} America/New_York")
    assert (copy["what"], copy["detail"]) == ("scheduled", "for 2027-01-12 09:00 America/New_York")
    assert copy["at"] == "2027-01-12T14:00:00+00:00"
    assert len(lines) == 2 and not any("UTC)" in line for line in lines), lines
    assert any(f"for {due:%Y-%m-%d %H:%M} America/New_York" in line for line in lines), lines
    api = _api(web, queued)
    assert lesson in api and copy in api


def test_a_paused_campaign_and_newsletter_read_held(web: WebServer, queued: dict[str, Any]) -> None:
    env = env_of(web)
    assert cadence(env, "campaigns", "pause", CAMPAIGN).status == 0
    assert cadence(env, "newsletters", "pause", NEWSLETTER).status == 0
    due = _lesson_due(web).astimezone(NEW_YORK)
    lesson, copy, lines = _shown(web)
    assert lesson["what"] == "held", lesson
    assert lesson["detail"].startswith(f"campaign paused; due {due:%Y-%m-%d %H:%M} America/New_York"), lesson
    assert copy["what"] == "held", copy
    assert copy["detail"].startswith("newsletter paused; due 2027-01-12 09:00 America/New_York"), copy
    assert len(lines) == 2 and all("held" in line and "scheduled" not in line for line in lines), lines
    assert any("campaign paused" in line for line in lines) and any("newsletter paused" in line for line in lines)
    api = _api(web, queued)
    assert lesson in api and copy in api


def test_the_console_page_shows_the_held_emails(web: WebServer, queued: dict[str, Any], browser: Any) -> None:
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "hal.viewer@clinic.example", "viewer")
        page.goto(web.url(f"/admin/subscribers/{queued['id']}"))
        rows = [r.split("\t") for r in page.locator("#timeline tbody tr").all_inner_texts()]
        copy = next(r for r in rows if r[2].strip() == NEWSLETTER)
        assert copy[4].strip() == "held", copy
        assert copy[5].startswith("newsletter paused; due 2027-01-12 09:00 America/New_York"), copy
        lesson = next(r for r in rows if r[2].strip() == CAMPAIGN and r[4].strip() not in ("sent", ""))
        assert lesson[4].strip() == "held" and lesson[5].startswith("campaign paused; due "), lesson
        assert all(r[4].strip() != "scheduled" for r in rows), rows
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()


def test_after_the_resume_they_read_scheduled_again(web: WebServer, queued: dict[str, Any]) -> None:
    env = env_of(web)
    assert cadence(env, "campaigns", "resume", CAMPAIGN).status == 0
    assert cadence(env, "newsletters", "resume", NEWSLETTER).status == 0
    due = _lesson_due(web).astimezone(NEW_YORK)
    lesson, copy, lines = _shown(web)
    assert (lesson["what"], lesson["detail"]) == ("scheduled", f"for {due:%Y-%m-%d %H:%M} America/New_York")
    assert (copy["what"], copy["detail"]) == ("scheduled", "for 2027-01-12 09:00 America/New_York")
    assert all("held" not in line for line in lines), lines


@pytest.mark.parametrize(
    ("state", "subscriber_tz", "what", "detail"),
    [
        ("running", None, "scheduled", "for 2026-12-08 07:30 America/New_York"),
        ("running", "Europe/Paris", "scheduled", "for 2026-12-08 13:30 Europe/Paris"),
        ("running", "Mars/Olympus", "scheduled", "for 2026-12-08 07:30 America/New_York"),  # unknown: as the send
        ("paused", None, "held", "campaign paused; due 2026-12-08 07:30 America/New_York, sent after it is resumed"),
        ("cancelled", None, "will be skipped", "campaign cancelled; was due 2026-12-08 07:30 America/New_York"),
        ("archived", None, "will be skipped", "campaign cancelled; was due 2026-12-08 07:30 America/New_York"),
    ],
)
def test_the_outlook_follows_the_campaigns_state_and_the_send_zone(
    state: str, subscriber_tz: str | None, what: str, detail: str
) -> None:
    """The rule itself, for the states the doors above do not reach: a cancelled or archived
    campaign's email still queued will never go (operations/delivery.py skips it); a zone the
    send path cannot read falls back to the campaign's there and here alike."""
    from datetime import UTC

    from cadence.db.models import Delivery, Subscriber
    from cadence.files.campaigns import find_campaign
    from cadence.operations.subscriber_tools import pending_outlook
    from tests.test_exit_goal import ROOT

    due = datetime(2026, 12, 8, 12, 30, tzinfo=UTC)  # a Tuesday, 07:30 in New York: inside the window
    row = Delivery(campaign_id=CAMPAIGN, step_id="", step_index=1, state="queued", due_at=due, not_before=due)
    person = Subscriber(email=DEE, status="active", timezone=subscriber_tz, attributes={}, paused_until=None)
    campaign = find_campaign(CAMPAIGN, ROOT / "campaigns")
    at, said, text = pending_outlook(
        row, person, suppressed=False, enrollment_state="active", campaign=campaign, tags=(), campaign_state=state
    )
    assert (at, said, text) == (due, what, detail)


def test_the_facts_the_outlook_reads_on_both_databases(tmp_path: Path, database_url: str) -> None:
    """db.subscriber_search.campaign_conditions on SQLite and PostgreSQL: a paused newsletter's
    state (mirrored into campaign_states) and its locked zone, read out of the JSON content;
    nothing for an id nobody touched."""
    from cadence.db.session import transaction
    from cadence.db.subscriber_search import campaign_conditions
    from cadence.operations import newsletters
    from tests.test_newsletters import ACTOR, NOW, setup

    settings, _ = setup(tmp_path, database_url)
    newsletters.schedule(settings, "spring", at="2027-01-12 09:00 local", actor=ACTOR, now=NOW)
    assert newsletters.pause(settings, "spring", actor=ACTOR, now=NOW)[0] == "paused"
    with transaction(settings.database_url) as session:
        states, zones = campaign_conditions(session, ["spring", "spring", CAMPAIGN])
    assert (states, zones) == ({"spring": "paused"}, {"spring": "America/New_York"})
