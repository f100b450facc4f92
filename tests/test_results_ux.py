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

