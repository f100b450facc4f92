"""Every email of the real campaign in real headless Chromium, at phone and desktop widths.

Uses the system Chromium (/usr/bin/chromium), never a Playwright browser download. Without it
the test skips, except under CI=true where a missing browser is a failure.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from cadence.authoring import SAMPLE_LINKS, Screenshot, screenshot_emails
from cadence.campaign_files import load_campaign
from cadence.core.render import Renderer, render_email
from tests.support.services import unavailable

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> list[Screenshot]:
    if not CHROMIUM.exists():
        unavailable("Chromium", "apt-get install chromium (the tests use /usr/bin/chromium)")
    campaign = load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")
    renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
    # A long name is the likeliest thing to push a phone layout sideways.
    subscriber = {"first_name": "Maximiliana-Alexandrina", "email": "max@example.com", "attributes": {}}
    emails = {
        f"{number:02d}-{step.id}--{segment.id}": render_email(
            renderer.variant(campaign, step, segment), subscriber=subscriber, links=SAMPLE_LINKS
        ).html
        for number, step in enumerate(campaign.steps, 1)
        for segment in campaign.segments
    }
    try:
        return screenshot_emails(emails, tmp_path_factory.mktemp("screenshots"), executable_path=str(CHROMIUM))
    except Exception as exc:  # playwright's errors: the browser would not start
        if "Executable doesn't exist" in str(exc) or "Failed to launch" in str(exc):
            unavailable("Chromium", f"it would not start: {exc}")
        raise


def test_every_email_is_photographed_at_375_and_600_pixels(screenshots: list[Screenshot]) -> None:
    assert len(screenshots) == 6 * 3 * 2
    for shot in screenshots:
        data = shot.path.read_bytes()
        assert data.startswith(b"\x89PNG"), shot.path
        assert len(data) > 20_000, f"{shot.path} looks blank"


def test_no_email_scrolls_sideways_on_a_phone(screenshots: list[Screenshot]) -> None:
    overflowing = [f"{s.name}: {s.scroll_width}px" for s in screenshots if s.width == 375 and s.scroll_width > 375]
    assert not overflowing, "horizontal scrolling at 375 px: " + ", ".join(overflowing)


def test_emails_fill_but_do_not_exceed_the_desktop_width(screenshots: list[Screenshot]) -> None:
    assert all(s.scroll_width <= 600 for s in screenshots if s.width == 600)
