"""The gaps a marketer's cold trial found in the staff results and console (results item 1-3):
a delivery skipped because the subscriber had reached the exit goal is labelled as such in
`cadence report`, the staff API and the console's results table (never a blank "(none yet)"
segment); the results table fits a 1280 px screen and scrolls inside its own box at 375 px.

Through the real doors: subscribers added and enrolled with the installed `cadence`, one tagged
`booked` through the staff API, the console in Chromium (the shared `browser` fixture)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.support.console import Console
from tests.support.web import WebServer
from tests.test_cli import cadence
from tests.test_console_campaigns import _log_in
from tests.test_exit_goal import CAMPAIGN, RUNNERS, call, env_of, web  # noqa: F401 - `web` is a fixture

GOAL_LABEL = "not sent: 1 exit goal reached"


@pytest.fixture(scope="module")
def converted(web: WebServer) -> dict[str, Any]:  # noqa: F811 - `web` is the fixture imported above
    """Lesson 1 to three runners; Ana books; two days later lesson 2 goes to Ben and Cy only
    (hers is skipped: goal reached)."""
    env = env_of(web)
    for address, terrain in RUNNERS.items():
        added = cadence(env, "subscribers", "add", address, "--tz", "America/New_York", "--attr", f"terrain={terrain}")
        assert added.status == 0, added
    assert cadence(env, "campaigns", "enroll", CAMPAIGN, "--all").status == 0
    assert web.drive() == 3
    made = cadence(env, "tokens", "add", "booking-system", "--scope", "write", "--json")
    assert made.status == 0, made
    token = json.loads(made.out)["token"]
    tagged = call(
        web, "POST", "/api/admin/subscribers/tags", token, json={"emails": ["ana@example.com"], "add": ["booked"]}
    )
    assert tagged.status_code == 200, tagged.text
    web.clock.advance(timedelta(days=2))
    assert web.drive() == 2
    return {"token": token}


def test_a_goal_skip_is_labelled_in_the_report_and_the_api(web: WebServer, converted: dict[str, Any]) -> None:  # noqa: F811
    env = env_of(web)
    document = json.loads(cadence(env, "report", CAMPAIGN, "--json").out)
    skipped = [r for r in document["rows"] if r["step"] == 2 and not r["segment"]]
    assert len(skipped) == 1, document["rows"]
    assert (skipped[0]["skipped"], skipped[0]["skipped_exit_goal"]) == (1, 1)
    assert skipped[0]["segment_label"] == GOAL_LABEL
    assert all(r["segment_label"] for r in document["rows"])  # every row says what it is
    assert document["total"]["skipped_exit_goal"] == 1

    table = cadence(env, "report", CAMPAIGN)
    assert table.status == 0, table
    assert "(none yet)" not in table.out
    line = next(x for x in table.out.splitlines() if "hips-first" in x and "not sent" in x)
    assert GOAL_LABEL in line

    api = call(web, "GET", f"/api/admin/report/{CAMPAIGN}", converted["token"]).json()
    assert [r["segment_label"] for r in api["rows"] if not r["segment"]] == [GOAL_LABEL]


def _results_page(console: Console, web: WebServer, width: int) -> Any:  # noqa: F811
    page = console.page
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(web.url(f"/admin/campaigns/{CAMPAIGN}"))
    page.get_by_role("heading", name="Results per step and segment").wait_for()
    return page


def test_the_console_results_table_labels_the_skip_and_fits_1280_and_375(
    web: WebServer, converted: dict[str, Any], browser: Any  # noqa: F811
) -> None:
    console = Console(browser, web)
    try:
        _log_in(console, web, "mo.viewer@clinic.example", "viewer")
        page = _results_page(console, web, 1280)
        segments = page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()
        assert GOAL_LABEL in segments and all(s.strip() not in ("", "—") for s in segments), segments
        goal = page.locator("#results thead th", has_text="Exit goal reached").bounding_box()
        assert goal is not None and goal["x"] >= 0 and goal["x"] + goal["width"] <= 1280, goal
        region = page.locator("#results").locator("xpath=..")
        table = page.locator("#results").bounding_box()
        box = region.bounding_box()
        assert table is not None and box is not None
        assert table["x"] + table["width"] <= box["x"] + box["width"] + 1, (table, box)  # no scrolling needed
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280

        page = _results_page(console, web, 375)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # the page itself does not scroll
        box = region.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, box
        overflow = region.evaluate("e => [getComputedStyle(e).overflowX, e.scrollWidth > e.clientWidth]")
        assert overflow == ["auto", True]  # the table scrolls inside its own region
        region.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
        goal = page.locator("#results thead th", has_text="Exit goal reached").bounding_box()
        assert goal is not None and goal["x"] >= box["x"] - 1
        assert goal["x"] + goal["width"] <= box["x"] + box["width"] + 1, (goal, box)
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()




def test_goal_skips_are_counted_the_same_live_and_folded(database_url: str) -> None:
    """The SQL of the new count, on SQLite and PostgreSQL: a goal skip counted live (above the
    watermark) and from the rollup after a fold gives the same row; other skips stay apart."""
    from functools import partial

    from sqlalchemy import select

    from cadence.core.drip_policy import GOAL_REACHED
    from cadence.db.migrate import upgrade
    from cadence.db.models import Delivery
    from cadence.db.session import transaction
    from cadence.operations.results import campaign_results, catch_up
    from tests.support.staff import T0, seed
    from tests.test_staff_results import LBP

    upgrade(database_url)
    with transaction(database_url) as session:
        seed(session)
        ann = session.scalars(select(Delivery).where(Delivery.step_index == 1)).one()
        for state, error in (("skipped", GOAL_REACHED), ("skipped", "subscriber is unsubscribed")):
            session.add(
                Delivery(
                    enrollment_id=ann.enrollment_id, subscriber_id=ann.subscriber_id, campaign_id=CAMPAIGN,
                    step_id="", step_index=2 if error == GOAL_REACHED else 3, segment_id="", state=state,
                    attempts=0, due_at=T0, not_before=T0, message_id="", content_hash="", last_error=error,
                    created_at=T0, sent_at=T0,
                )
            )  # fmt: skip
    with transaction(database_url) as session:
        live = campaign_results(session, CAMPAIGN, LBP, T0)
    catch_up(partial(transaction, database_url), lag=timedelta(0))
    with transaction(database_url) as session:
        folded = campaign_results(session, CAMPAIGN, LBP, T0)
    assert folded.rows == live.rows
    labels = {(r.step, r.segment_label): (r.skipped, r.skipped_exit_goal) for r in folded.rows if not r.segment}
    assert labels == {(1, "not sent: 1 failed"): (0, 0), (3, GOAL_LABEL): (1, 1), (4, "not sent: 1 skipped"): (1, 0)}


# --------------------------------------------------------------------------- the timeline (item 2)
# These run after the results tests above: they queue more emails, which the report would count.

NEWSLETTER = "clinic-news-2027-01"


@pytest.fixture(scope="module")
def pending(web: WebServer, converted: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """Lesson 3 queued for Ben and Cy by a tick (not sent yet: the workers have not run); then
    Ben has the tag `booked` (see below how). And a newsletter copy queued for Cy four days
    ahead, at 09:00 in New York."""
    from cadence.db.newsletters import insert_copies
    from cadence.db.session import transaction
    from cadence.operations import enrollment as engine

    queued: list[Any] = []
    for _ in range(6):  # lesson 3 is due 3 days after lesson 2, in the send window
        web.clock.advance(timedelta(days=1))
        queued += [i for batch in engine.tick(web.runtime).batches for i in batch]
        if len(queued) == 2:
            break
    assert len(queued) == 2, queued
    # Ben's tag is written straight into the table: a tag every door would act on at once
    # (operations/exit_goals.py ends the drip and skips the queued lesson), but one the goal
    # did not name when it was given (a goal added to the campaign file later). Only the send
    # path's re-check will skip the lesson, and the timeline must say so beforehand.
    from cadence.db.models import SubscriberTag

    ben = web.subscriber("ben@example.com")
    assert ben is not None
    with transaction(web.settings.database_url) as session:
        session.add(SubscriberTag(subscriber_id=ben.id, tag="booked", created_at=web.clock.now()))
    cy = web.subscriber("cy@example.com")
    assert cy is not None
    due = (web.clock.now() + timedelta(days=4)).replace(hour=14, minute=0, second=0, microsecond=0)
    with transaction(web.settings.database_url) as session:
        assert insert_copies(session, NEWSLETTER, [(cy.id, "everyone", due)], web.clock.now()) == 1
    return {"cy": cy.id, "ben": ben.id, "due": due}


def _timeline(web: WebServer, address: str) -> list[dict[str, Any]]:  # noqa: F811
    shown = cadence(env_of(web), "subscribers", "show", address, "--json")
    assert shown.status == 0, shown
    timeline: list[dict[str, Any]] = json.loads(shown.out)["timeline"]
    return timeline


def test_after_the_goal_no_bare_queued_line_remains(web: WebServer, converted: dict[str, Any]) -> None:  # noqa: F811
    timeline = _timeline(web, "ana@example.com")
    assert "queued" not in [t["what"] for t in timeline], timeline
    skipped = [t for t in timeline if t["step"] == "hips-first"]
    assert [(t["what"], t["detail"]) for t in skipped] == [("skipped", "exit goal reached")]


def test_pending_emails_say_when_they_go_or_that_they_will_be_skipped(
    web: WebServer, converted: dict[str, Any], pending: dict[str, Any]  # noqa: F811
) -> None:
    cy = _timeline(web, "cy@example.com")
    assert "queued" not in [t["what"] for t in cy]
    copy = next(t for t in cy if t["campaign"] == NEWSLETTER)
    due = pending["due"]
    assert (copy["what"], copy["at"]) == ("scheduled", due.isoformat())  # when it goes, not when queued
    assert copy["detail"] == f"for {due:%Y-%m-%d} 09:00 America/New_York"  # in her zone
    lesson = next(t for t in cy if t["step"] == "adjust-the-load")
    assert lesson["what"] == "scheduled" and lesson["detail"].endswith("America/New_York"), lesson

    ben = next(t for t in _timeline(web, "ben@example.com") if t["step"] == "adjust-the-load")
    assert ben["what"] == "will be skipped" and ben["detail"].startswith("exit goal reached; was due "), ben

    api = call(web, "GET", "/api/admin/subscribers/cy@example.com", converted["token"]).json()
    assert next(t for t in api["timeline"] if t["campaign"] == NEWSLETTER) == copy

    table = cadence(env_of(web), "subscribers", "show", "cy@example.com")
    line = next(x for x in table.out.splitlines() if NEWSLETTER in x)
    assert "scheduled" in line and f"for {due:%Y-%m-%d} 09:00 America/New_York" in line, table.out


def test_the_console_timeline_shows_scheduled_and_will_be_skipped(
    web: WebServer, pending: dict[str, Any], browser: Any  # noqa: F811
) -> None:
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "tim.viewer@clinic.example", "viewer")
        page.goto(web.url(f"/admin/subscribers/{pending['cy']}"))
        rows = [r.split("\t") for r in page.locator("#timeline tbody tr").all_inner_texts()]
        copy = next(r for r in rows if r[2].strip() == NEWSLETTER)
        due = pending["due"]
        assert copy[0].strip() == f"{due:%Y-%m-%d %H:%M}"  # the UTC column: when it goes
        assert [c.strip() for c in copy[4:6]] == ["scheduled", f"for {due:%Y-%m-%d} 09:00 America/New_York"]
        assert all(r[4].strip() != "queued" for r in rows), rows

        page.goto(web.url(f"/admin/subscribers/{pending['ben']}"))
        rows = [r.split("\t") for r in page.locator("#timeline tbody tr").all_inner_texts()]
        lesson = next(r for r in rows if r[3].strip() == "adjust-the-load")
        assert lesson[4].strip() == "will be skipped" and "exit goal reached" in lesson[5], lesson
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()
