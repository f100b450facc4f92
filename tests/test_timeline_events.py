"""Pauses, resumes and answer changes are events of their own (issue 13 item 4): a subscriber
pauses and resumes through the JSON API and changes an answer on their preference page (over
HTTP, as a browser posts it); `cadence subscribers show` (table and --json), the staff API and
the console profile in Chromium each show them as timeline entries. Against a real
``cadence web``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.core.tokens import make_token
from cadence.db.models import Delivery
from cadence.db.session import transaction
from cadence.operations.subscriber_tools import describe_event
from tests.support.console import Console
from tests.support.web import SECRET, WebServer, csrf_token
from tests.test_cli import cadence
from tests.test_console_campaigns import _log_in

ADDRESS = "paula@example.com"


@pytest.mark.parametrize(
    ("kind", "data", "shown"),
    [
        ("pause", {"weeks": 4, "until": "2027-01-05T12:30:00+00:00", "how": "api"}, "4 weeks, until 2027-01-05 (api)"),
        ("resume", {"was_paused_until": "2027-01-05T12:30:00+00:00", "how": ""}, "had been paused until 2027-01-05"),
        (
            "answers_changed",
            {"changes": {"terrain": {"from": "trails", "to": "roads"}, "race_month": {"from": None, "to": "2027-04"}}},
            "race_month: (none) → 2027-04, terrain: trails → roads",
        ),
        ("click", {"url": "https://clinic.example/book"}, "https://clinic.example/book"),
        ("unsubscribe", {"how": "one-click"}, "one-click"),
    ],
)
def test_each_event_reads_in_a_few_words(kind: str, data: dict[str, Any], shown: str) -> None:
    assert describe_event(kind, data) == shown


@pytest.fixture(scope="module")
def lived(web: WebServer) -> dict[str, Any]:
    """Paula (trails) pauses for 4 weeks, resumes, resumes again (nothing to resume), then
    changes where she runs on her preference page, and saves it again unchanged."""
    subscriber_id, _, _ = web.add_delivery(ADDRESS)
    token = make_token(SECRET, "preferences", subscriber_id)
    api = httpx.Client(base_url=web.url("/api"), headers=web.from_ip(), timeout=10)
    assert api.post(f"/preferences/{token}/pause", json={"weeks": 4}).status_code == 200
    web.clock.advance(timedelta(days=1))
    assert api.delete(f"/preferences/{token}/pause").status_code == 200
    assert api.delete(f"/preferences/{token}/pause").status_code == 200  # not paused: no second event
    web.clock.advance(timedelta(hours=1))
    with web.client() as browser_like:
        page = browser_like.get(f"/p/{token}")
        form = {"csrf_token": csrf_token(page.text), "terrain": "roads", "training_for_race": "no", "race_month": ""}
        for _ in range(2):  # the second save changes nothing and records nothing
            saved = browser_like.post(f"/p/{token}", data=form)
            assert saved.status_code in (200, 303), saved.text
    return {"id": subscriber_id}


def test_subscribers_show_lists_pause_resume_and_the_answer_change(web: WebServer, lived: dict[str, Any]) -> None:
    env = {**os.environ, **web.env, "COLUMNS": "200"}
    document = json.loads(cadence(env, "subscribers", "show", ADDRESS, "--json").out)
    mine = [
        (t["what"], t["detail"]) for t in document["timeline"] if t["what"] in ("pause", "resume", "answers_changed")
    ]
    assert [what for what, _ in mine] == ["pause", "resume", "answers_changed"]
    assert mine[0][1].startswith("4 weeks, until ") and mine[0][1].endswith("(api)")
    assert mine[1][1].startswith("had been paused until ")
    assert "terrain: trails → roads" in mine[2][1] and mine[2][1].endswith("(page)")
    table = " ".join(cadence(env, "subscribers", "show", ADDRESS).out.split())
    assert "pause" in table and "resume" in table and "answers_changed" in table and "trails → roads" in table


def test_the_staff_api_profile_has_them_too(web: WebServer, lived: dict[str, Any]) -> None:
    env = {**os.environ, **web.env}
    token = json.loads(cadence(env, "tokens", "add", "timeline-reader", "--scope", "read", "--json").out)["token"]
    got = httpx.get(
        web.url(f"/api/admin/subscribers/{ADDRESS}"),
        headers={"Authorization": f"Bearer {token}", **web.from_ip()},
        timeout=10,
    )
    assert got.status_code == 200, got.text
    kinds = [t["what"] for t in got.json()["timeline"]]
    assert kinds.count("pause") == 1 and kinds.count("resume") == 1 and kinds.count("answers_changed") == 1


def test_the_console_profile_shows_them_as_rows(web: WebServer, lived: dict[str, Any], browser: Any) -> None:
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "tess.viewer@clinic.example", "viewer")
        page.goto(web.url(f"/admin/subscribers/{lived['id']}"))
        rows = page.locator("#timeline tbody tr").all_inner_texts()
        mine = [row for row in rows if row.split("\t")[1].strip() in ("answers_changed", "resume", "pause")]
        assert [row.split("\t")[1].strip() for row in mine] == ["answers_changed", "resume", "pause"]  # newest first
        assert "terrain: trails → roads" in mine[0] and "4 weeks, until" in mine[2]
        # Her next lesson is in the workers' hands, postponed to its window: the campaigns table
        # gives that time, not "—" (the enrollment's own next send time is empty meanwhile).
        window = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)
        with transaction(web.settings.database_url) as session:
            sent = session.scalars(select(Delivery).where(Delivery.subscriber_id == lived["id"])).one()
            session.add(
                Delivery(
                    enrollment_id=sent.enrollment_id, subscriber_id=lived["id"], campaign_id=sent.campaign_id,
                    step_id="", step_index=1, segment_id="", state="queued", attempts=0, due_at=window,
                    not_before=window, message_id="", content_hash="", last_error="", created_at=web.clock.now(),
                )
            )  # fmt: skip
        page.reload()
        assert page.locator("td.next-send").first.inner_text() == "2026-12-09 12:00 UTC"
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()
