"""End to end in a real browser: a trail runner signs up, confirms, gets the trail variant,
switches to race training in the preference center, gets the race variant, unsubscribes in one
click and gets nothing more. Headless Chromium (the system's, never a download) drives the real
``cadence web``; the drip is driven by enrollment.tick + enrollment.deliver in this process.

Screenshots of every page at 375 and 1280 px go to $CADENCE_SCREENSHOTS_DIR when set (that is how
docs/screenshots/web-*.png are made), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadence.core.render import render_email
from tests.support.services import unavailable
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, body, find_url, parse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
NAME = "Zebedee"  # typed into the form; must never appear in the confirmation email


def expected_subject(web: WebServer, step_index: int, segment_id: str) -> str:
    campaign = web.runtime.catalog.get("lower-back-pain")
    variant = web.runtime.renderer.variant(campaign, campaign.steps[step_index], campaign.segment(segment_id))
    links = {"unsubscribe": "u", "preferences": "p", "web_view": "v"}
    return render_email(variant, subscriber={"first_name": "", "email": "", "attributes": {}}, links=links).subject


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 375, "height": 812})
            yield context.new_page()
        finally:
            browser.close()


class Shots:
    def __init__(self, page: Any, folder: Path) -> None:
        self.page, self.folder = page, folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        for width, height in ((375, 812), (1280, 900)):
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.screenshot(path=str(self.folder / f"web-{name}-{width}.png"), full_page=True)
        self.page.set_viewport_size({"width": 375, "height": 812})


def test_a_trail_runner_signs_up_switches_to_race_training_and_unsubscribes_in_one_click(
    tmp_path: Path, browser_page: Any
) -> None:
    page = browser_page
    shots = Shots(page, Path(os.environ.get("CADENCE_SCREENSHOTS_DIR") or tmp_path / "screenshots"))
    csp_violations: list[str] = []
    page.on("console", lambda msg: csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None)

    with SmtpSink() as sink, WebServer(tmp_path, sink) as web:
        # 1. The form, filled in as a trail runner not training for a race.
        page.goto(web.url("/subscribe"))
        shots.take("subscribe")
        page.get_by_label("Email address").fill("Trail.Runner@Example.com")
        page.get_by_label("First name").fill(NAME)
        page.get_by_label("Trails").check()
        page.get_by_label("No", exact=True).check()
        page.get_by_role("button", name="Send me the course").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        shots.take("check-inbox")

        # 2. Exactly one confirmation email, with none of what was typed but the address.
        [confirmation] = sink.wait_for(1)
        time.sleep(0.3)
        assert len(sink.messages) == 1
        assert NAME.encode() not in confirmation.data
        assert web.subscriber("trail.runner@example.com").status == "pending"  # type: ignore[union-attr]

        # 3. The link shows a button (scanners that GET it confirm nothing); one click confirms.
        page.goto(find_url(parse(confirmation), "/confirm/"))
        assert web.subscriber("trail.runner@example.com").status == "pending"  # type: ignore[union-attr]
        shots.take("confirm")
        page.get_by_role("button", name="Yes, subscribe me").click()
        page.get_by_role("heading", name="You're subscribed").wait_for()
        shots.take("confirmed")
        subscriber = web.subscriber("trail.runner@example.com")
        assert subscriber is not None and subscriber.status == "active"
        consent = subscriber.consent
        assert consent["ip"] == consent["confirmed_ip"] == "127.0.0.1"
        assert "Chrome" in consent["user_agent"] and consent["form_id"] == "web:subscribe"
        assert consent["page_url"] == web.url("/subscribe") and consent["wording_version"].startswith("signup-")
        assert consent["confirmed_at"] and subscriber.confirmed_at == web.clock.now()

        # 4. The drip's first step arrives, trail variant.
        assert web.drive() == 1
        first = parse(sink.wait_for(2)[1])
        assert first["Subject"] == expected_subject(web, 0, "trail+no-race")
        assert f"Hi {NAME}," in body(first, "plain")  # their own name, in their own drip email

        # 5. Preference center from that email: now training for a race, on roads.
        page.goto(find_url(first, "/p/"))
        shots.take("preferences")
        page.get_by_label("Roads and paths").check()
        page.get_by_label("Yes", exact=True).check()
        page.get_by_label("If you are, roughly when is the race?").select_option(index=4)
        page.get_by_role("button", name="Save answers").click()
        page.get_by_text("Your answers are saved").wait_for()

        # 6. Two days later the next step arrives in the race variant (segment chosen at send time).
        web.clock.advance(timedelta(days=2))
        assert web.drive() == 1
        second = parse(sink.wait_for(3)[2])
        assert second["Subject"] == expected_subject(web, 1, "everyday+race")
        assert expected_subject(web, 1, "everyday+race") != expected_subject(web, 1, "trail+no-race")

        # 7. The web view shows that email, styled (no CSP violation), as sent.
        page.goto(find_url(second, "/v/"))
        assert page.title() == second["Subject"]
        shots.take("web-view")

        # 8. Unsubscribe from the link in the email: one click.
        unsubscribe_url = str(second["List-Unsubscribe"]).split(",")[0].strip(" <>")
        assert find_url(second, "/u/") == unsubscribe_url
        page.goto(unsubscribe_url)
        shots.take("unsubscribe")
        page.get_by_role("button", name="Unsubscribe").click()
        page.get_by_role("heading", name="You're unsubscribed").wait_for()
        shots.take("unsubscribed")
        assert web.subscriber("trail.runner@example.com").status == "unsubscribed"  # type: ignore[union-attr]

        # 9. Nothing more arrives.
        for _ in range(3):
            web.clock.advance(timedelta(days=3))
            assert web.drive() == 0
        time.sleep(0.2)
        assert len(sink.messages) == 3

    assert csp_violations == []
