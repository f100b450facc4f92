"""Exit goals (issue 13 item 6): a drip's `exit_goal:` condition on tags and attributes, the pure
rule that decides it, `campaigns validate` naming the line of a bad goal, and the whole path
through the real doors: subscribers added and enrolled with the installed `cadence`, one of them
tagged `booked` through the staff API over HTTP (as the clinic's booking system does), the next
step not sent to them, the enrollment ended as "goal reached", and `cadence report` (table,
--json, --csv), the staff API report and the console page in Chromium counting "exit goal
reached" at the step they converted."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cadence.core.campaign import ExitGoal, Rule
from cadence.core.drip_policy import GOAL_REACHED, enrollment_end_after_skip, exit_goal_reached, skip_reason
from cadence.db.models import Delivery, Enrollment, Event, Subscriber
from cadence.db.session import transaction
from cadence.files.campaigns import find_campaign
from tests.support.cluster import ROOT
from tests.support.console import Console
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer
from tests.test_cli import cadence
from tests.test_console_campaigns import _log_in

CAMPAIGN = "lower-back-pain"
TODAY = date(2026, 12, 3)
BOOKED_TAG = ExitGoal(tags=("booked",))
BOOKED_EITHER = ExitGoal(tags=("booked",), rules=(Rule("booked", "truthy"),))
BOTH = ExitGoal(tags=("booked",), rules=(Rule("paid", "truthy"),), match="all")
SOON = ExitGoal(rules=(Rule("appointment", "within_weeks", 1),))


@pytest.mark.parametrize(
    ("goal", "attributes", "tags", "reached"),
    [
        (None, {"booked": "yes"}, {"booked"}, False),  # no goal: never reached
        (BOOKED_TAG, {}, set(), False),
        (BOOKED_TAG, {}, {"booked"}, True),
        (BOOKED_TAG, {}, {"Booked"}, True),  # tags compare as staff type them
        (BOOKED_TAG, {"booked": "yes"}, {"vip"}, False),  # a tag goal ignores attributes
        (BOOKED_EITHER, {"booked": "yes"}, set(), True),  # any: the attribute alone is enough
        (BOOKED_EITHER, {"booked": "no"}, set(), False),
        (BOOKED_EITHER, {}, {"booked"}, True),
        (BOTH, {"paid": "true"}, set(), False),  # all: the tag and the rule
        (BOTH, {"paid": "true"}, {"booked"}, True),
        (SOON, {"appointment": "2026-12-08"}, set(), True),  # date rules read the send date
        (SOON, {"appointment": "2026-12-20"}, set(), False),
        (ExitGoal(), {}, {"booked"}, False),  # nothing to reach (validation refuses this)
    ],
)
def test_exit_goal_reached_reads_tags_and_rules_as_match_says(
    goal: ExitGoal | None, attributes: dict[str, Any], tags: set[str], reached: bool
) -> None:
    assert exit_goal_reached(goal, attributes, tags, TODAY) is reached


@pytest.mark.parametrize(
    ("status", "suppressed", "enrollment", "step", "goal", "reason"),
    [
        ("active", False, "active", 1, False, ""),
        ("active", False, "active", 1, True, GOAL_REACHED),
        ("unsubscribed", False, "active", 1, True, "subscriber is unsubscribed"),  # unsubscribe says more
        ("active", True, "active", 1, True, "address is suppressed"),
        ("active", False, "active", 9, True, "step no longer exists in the campaign"),
    ],
)
def test_a_reached_goal_is_a_skip_reason_after_the_stronger_ones(
    status: str, suppressed: bool, enrollment: str, step: int, goal: bool, reason: str
) -> None:
    got = skip_reason(
        subscriber_status=status,
        suppressed=suppressed,
        enrollment_state=enrollment,
        step_index=step,
        step_count=8,
        goal_reached=goal,
    )
    assert got == reason


@pytest.mark.parametrize(
    ("step", "reason", "end"),
    [
        (1, GOAL_REACHED, ("exited", "goal reached")),
        (1, "subscriber is unsubscribed", ("cancelled", "subscriber is unsubscribed")),
        (9, GOAL_REACHED, ("completed", "the campaign has fewer steps now")),
    ],
)
def test_a_goal_ends_the_enrollment_as_exited(step: int, reason: str, end: tuple[str, str]) -> None:
    assert enrollment_end_after_skip(step, 8, reason) == end


def test_the_course_file_has_the_booking_goal() -> None:
    campaign = find_campaign(CAMPAIGN, ROOT / "campaigns")
    assert campaign.exit_goal == ExitGoal(tags=("booked",))
    assert campaign.exit_goal.describe() == "tag booked"


@pytest.mark.parametrize(
    ("goal", "says"),
    [
        ("exit_goal: booked", "write the goal as a condition, e.g. exit_goal: {tags: [booked]}"),
        ("exit_goal: {}", "give tags (e.g. tags: [booked]"),
        ("exit_goal:\n  rules:\n    - {attribute: booked, op: is}", "exit_goal.rules.0.op"),
        ("exit_goal:\n  tags: [booked]\n  when: later", "exit_goal.when"),
    ],
)
def test_validate_names_the_line_of_a_bad_exit_goal(tmp_path: Path, goal: str, says: str) -> None:
    campaigns = tmp_path / "campaigns"
    shutil.copytree(ROOT / "campaigns", campaigns)
    path = campaigns / f"{CAMPAIGN}.yaml"
    text = path.read_text(encoding="utf-8")
    head = text[: text.index("exit_goal:")]
    path.write_text(head + goal + "\n", encoding="utf-8")
    line = head.count("\n") + 1 + (2 if ".rules.0" in says else 0) + (2 if ".when" in says else 0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENCE_")}
    env |= {"CADENCE_DATA_DIR": str(tmp_path / "data"), "CADENCE_TEMPLATES_DIR": str(ROOT / "templates")}
    ran = cadence(env, "campaigns", "validate", CAMPAIGN, "--campaigns-dir", str(campaigns))
    assert ran.status == 1, ran
    told = ran.out + ran.err
    assert says in told and f"{CAMPAIGN}.yaml:{line}: exit_goal" in told, told


# --------------------------------------------------------------------------- through the doors


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    with WebServer(tmp_path_factory.mktemp("exit-goal"), web_sink) as server:
        yield server


def env_of(web: WebServer) -> dict[str, str]:
    return {**os.environ, **web.env, "COLUMNS": "220"}


def call(web: WebServer, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **web.from_ip()}
    return httpx.request(method, web.url(path), headers=headers, timeout=20, **kwargs)


RUNNERS = {"ana@example.com": "trails", "ben@example.com": "trails", "cy@example.com": "roads"}


@pytest.fixture(scope="module")
def converted(web: WebServer) -> dict[str, Any]:
    """Three runners get lesson 1; Ana books (the booking system tags her through the staff
    API); two days later lesson 2 goes to Ben and Cy only."""
    env = env_of(web)
    for address, terrain in RUNNERS.items():
        added = cadence(env, "subscribers", "add", address, "--tz", "America/New_York", "--attr", f"terrain={terrain}")
        assert added.status == 0, added
    assert cadence(env, "campaigns", "enroll", CAMPAIGN, "--all").status == 0
    assert web.drive() == 3  # lesson 1 to everyone
    made = cadence(env, "tokens", "add", "booking-system", "--scope", "write", "--json")
    assert made.status == 0, made
    token = json.loads(made.out)["token"]
    tagged = call(
        web, "POST", "/api/admin/subscribers/tags", token, json={"emails": ["ana@example.com"], "add": ["booked"]}
    )
    assert tagged.status_code == 200 and tagged.json()["added"] == 1, tagged.text
    web.sink.clear()
    web.clock.advance(timedelta(days=2))
    web.drive()
    return {"token": token, "received": [m.rcpt_tos for m in web.sink.wait_for(2)]}


def test_a_booked_runner_gets_no_further_lesson_and_leaves_as_goal_reached(
    web: WebServer, converted: dict[str, Any]
) -> None:
    assert sorted(converted["received"]) == [("ben@example.com",), ("cy@example.com",)]
    with transaction(web.settings.database_url) as session:
        ana = session.scalar(select(Subscriber).where(Subscriber.email_key == "ana@example.com"))
        assert ana is not None
        enrollment = session.scalar(select(Enrollment).where(Enrollment.subscriber_id == ana.id))
        assert enrollment is not None
        assert (enrollment.state, enrollment.end_reason, enrollment.next_send_at) == ("exited", "goal reached", None)
        rows = {
            d.step_index: (d.state, d.last_error)
            for d in session.scalars(select(Delivery).where(Delivery.subscriber_id == ana.id))
        }
        assert rows == {0: ("sent", ""), 1: ("skipped", GOAL_REACHED)}
        goal = session.scalar(select(Event).where(Event.kind == "exit_goal"))
        assert goal is not None and goal.subscriber_id == ana.id
        assert goal.data == {"campaign": CAMPAIGN, "before_step": "hips-first"}
    web.drive()  # nothing more for her, however often the scheduler runs
    assert all(m.rcpt_tos != ("ana@example.com",) for m in web.sink.messages)


def test_report_counts_the_goal_at_the_step_they_converted_in_every_format(
    web: WebServer, converted: dict[str, Any]
) -> None:
    env = env_of(web)
    document = json.loads(cadence(env, "report", CAMPAIGN, "--json").out)
    cells = {(r["step"], r["segment"]): r for r in document["rows"]}
    trail = cells[(1, "trail+no-race")]
    assert (trail["sent"], trail["exit_goal_reached"], trail["goal_rate"]) == (2, 1, 0.5)
    assert cells[(1, "everyday+no-race")]["exit_goal_reached"] == 0
    assert (document["total"]["exit_goal_reached"], document["total"]["goal_rate"]) == (1, round(1 / 3, 4))
    assert document["exit_goal"] == "tag booked"

    spreadsheet = list(csv.DictReader(io.StringIO(cadence(env, "report", CAMPAIGN, "--csv").out)))
    row = next(r for r in spreadsheet if (r["step"], r["segment"]) == ("1", "trail+no-race"))
    assert (row["exit_goal_reached"], row["goal_rate"]) == ("1", "0.5")

    table = cadence(env, "report", CAMPAIGN)
    assert table.status == 0 and "exit goal reached" in table.out and "Exit goal: tag booked" in table.out
    line = next(x for x in table.out.splitlines() if "trail+no-race" in x and "why-it-hurts" in x)
    assert [cell.strip() for cell in line.split("│")[-3:-1]] == ["1", "50.0%"]
    narrow = cadence({**env, "COLUMNS": "80"}, "report", CAMPAIGN)
    assert "exit goal reached" in narrow.out and max(len(x) for x in narrow.out.splitlines()) <= 80

    api = call(web, "GET", f"/api/admin/report/{CAMPAIGN}", converted["token"]).json()
    assert api["total"]["exit_goal_reached"] == 1 and api["exit_goal"] == "tag booked"


def test_the_console_campaign_page_shows_exit_goal_reached(
    web: WebServer, converted: dict[str, Any], browser: Any
) -> None:
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "vi.viewer@clinic.example", "viewer")
        page.goto(web.url(f"/admin/campaigns/{CAMPAIGN}"))
        page.get_by_role("heading", name="Results per step and segment").wait_for()
        headers = page.locator("#results thead th").all_inner_texts()
        assert headers[-1].split() == ["Exit", "goal", "reached", "and", "goal", "rate"]  # the rate under the count
        trail = page.locator("#results tbody tr", has_text="trail+no-race").first.inner_text().split("\t")
        assert trail[-1].split("\n")[:2] == ["1", "50.0 %"]
        assert "Exit goal: tag booked" in page.locator("#exit-goal").inner_text()
        assert console.csp == [] and console.dialogs == []
    finally:
        console.close()
