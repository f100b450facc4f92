"""Every email of the real campaign in real headless Chromium, at phone and desktop widths.

Uses the system Chromium (/usr/bin/chromium), never a Playwright browser download. Without it
the test skips, except under CI=true where a missing browser is a failure.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from cadence.core.render import Renderer, render_email
from cadence.files.campaigns import load_campaign
from cadence.review.previews import SAMPLE_LINKS, Screenshot, screenshot_emails
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
    assert len(screenshots) == 8 * 6 * 2  # steps x facet combinations x widths
    for shot in screenshots:
        data = shot.path.read_bytes()
        assert data.startswith(b"\x89PNG"), shot.path
        assert len(data) > 20_000, f"{shot.path} looks blank"


def test_no_email_scrolls_sideways_on_a_phone(screenshots: list[Screenshot]) -> None:
    overflowing = [f"{s.name}: {s.scroll_width}px" for s in screenshots if s.width == 375 and s.scroll_width > 375]
    assert not overflowing, "horizontal scrolling at 375 px: " + ", ".join(overflowing)


def test_emails_fill_but_do_not_exceed_the_desktop_width(screenshots: list[Screenshot]) -> None:
    assert all(s.scroll_width <= 600 for s in screenshots if s.width == 600)


def test_wrapping_the_html_for_7bit_changes_no_pixel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line breaks wrap_long_lines adds (so the HTML part can go 7bit) render identically."""
    if not CHROMIUM.exists():
        unavailable("Chromium", "apt-get install chromium (the tests use /usr/bin/chromium)")
    from cadence.core import render_html

    campaign = load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")
    subscriber = {"first_name": "José", "email": "jose@example.com", "attributes": {}}

    def emails() -> dict[str, str]:
        renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
        segment = campaign.segments[0]
        return {
            f"{n}-{step.id}": render_email(
                renderer.variant(campaign, step, segment), subscriber=subscriber, links=SAMPLE_LINKS
            ).html
            for n, step in enumerate(campaign.steps, 1)
        }

    wrapped = emails()
    monkeypatch.setattr(render_html, "WRAP_WIDTH", 10**9)
    unwrapped = emails()
    assert all(max(map(len, html.split("\n"))) < 990 for html in wrapped.values())
    assert all(max(map(len, html.split("\n"))) > 10_000 for html in unwrapped.values())
    shots_wrapped = screenshot_emails(wrapped, tmp_path / "wrapped", executable_path=str(CHROMIUM))
    shots_unwrapped = screenshot_emails(unwrapped, tmp_path / "unwrapped", executable_path=str(CHROMIUM))
    assert len(shots_wrapped) == len(shots_unwrapped) == 16
    for a, b in zip(shots_wrapped, shots_unwrapped, strict=True):
        assert (a.name, a.width) == (b.name, b.width)
        assert a.path.read_bytes() == b.path.read_bytes(), f"{a.name} at {a.width}px renders differently"
