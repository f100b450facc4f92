"""The campaign page's preview grid (issue 14) in headless Chromium against the real ``cadence
web``: every step × segment at 375 and 600 px, each a lazy, sandboxed frame (no scripts, no
same origin) loading a console route that serves the email under its own strict policy; each
frame shows its segment's own text; a campaign with a broken template lists its problems and
says so in the frame. axe-core finds nothing serious on the page."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.axe import axe_script
from tests.support.console import PASSWORD, Console, new_user, session_client
from tests.support.smtpd import SmtpSink
from tests.support.web import REPO, WebServer

CAMPAIGN = "lower-back-pain"
BROKEN = "broken-course"
# Step 1 as each terrain reads it (templates/lower-back-pain/01-why-it-hurts.mjml).
TRAIL_TEXT = "Why the trails make it show"
ROAD_TEXT = "Why it often shows up late"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    """``cadence web`` over a copy of the campaigns with one more: the course again as
    broken-course, whose second email has a template error."""
    tmp = tmp_path_factory.mktemp("preview")
    campaigns, templates = tmp / "campaigns", tmp / "templates"
    shutil.copytree(REPO / "campaigns", campaigns)
    shutil.copytree(REPO / "templates", templates)
    shutil.copytree(campaigns / CAMPAIGN, campaigns / BROKEN)  # its guide pages
    source = (campaigns / f"{CAMPAIGN}.yaml").read_text()
    # Its first two steps only (every email of a new campaign is compiled once: seconds each on
    # a busy machine), the second with a template error.
    steps = source.index("steps:")
    two = "\n".join(source[steps:].splitlines()[:3]) + "\n"
    broken = (source[:steps] + two).replace(f"id: {CAMPAIGN}", f"id: {BROKEN}")
    broken = broken.replace("lower-back-pain/02-hips-first.mjml", "broken/02-hips-first.mjml")
    (campaigns / f"{BROKEN}.yaml").write_text(
        broken.replace("name: Lower back pain for runners", "name: Broken course")
    )
    (templates / "broken").mkdir()
    second = (templates / CAMPAIGN / "02-hips-first.mjml").read_text()
    (templates / "broken" / "02-hips-first.mjml").write_text(second.replace("</mj-text>", "{% if %}</mj-text>", 1))
    extra = {"CADENCE_CAMPAIGNS_DIR": str(campaigns), "CADENCE_TEMPLATES_DIR": str(templates)}
    with WebServer(tmp, web_sink, extra_env=extra) as server:
        yield server


def _log_in(console: Console, web: WebServer, email: str) -> None:
    page = console.page
    page.goto(web.url(new_user(web, email, "viewer")))
    page.get_by_label("New password").fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.get_by_text("Your password is set").wait_for()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()


def _frame_text(page: Any, title: str) -> str:
    """The text of the frame titled `title`, once the lazy frame is scrolled to and loaded."""
    frame = page.locator(f'iframe[title="{title}"]')
    frame.scroll_into_view_if_needed()
    body = page.frame_locator(f'iframe[title="{title}"]').locator("body")
    body.wait_for(timeout=30_000)
    return str(body.inner_text())


def test_every_email_in_a_sandboxed_lazy_frame_with_its_segments_text(web: WebServer, browser: Any) -> None:
    script = axe_script()
    console = Console(browser, web)
    page = console.page
    try:
        _log_in(console, web, "vic.viewer@clinic.example")
        page.goto(web.url(f"/admin/campaigns/{CAMPAIGN}"))
        page.get_by_role("heading", name="Preview of every email").wait_for()
        assert page.locator("#problems").inner_text().startswith("No problems found")
        frames = page.locator("#main iframe").evaluate_all(
            "frames => frames.map(f => [f.getAttribute('sandbox'), f.loading, f.width, f.getAttribute('src')])"
        )
        assert len(frames) == 8 * 6 * 2  # steps × segments × (375, 600 px)
        assert {(sandbox, lazy) for sandbox, lazy, _, _ in frames} == {("", "lazy")}  # no allow-* at all
        assert sorted({width for _, _, width, _ in frames}) == ["375", "600"]
        assert all(src.startswith(f"/admin/campaigns/{CAMPAIGN}/preview/") for _, _, _, src in frames)
        trail = _frame_text(page, "Step 1 why-it-hurts, trail+race-soon, phone width")
        road = _frame_text(page, "Step 1 why-it-hurts, everyday+no-race, desktop width")
        assert TRAIL_TEXT in trail and ROAD_TEXT not in trail
        assert ROAD_TEXT in road and TRAIL_TEXT not in road
        last = _frame_text(page, "Step 8 check-in, everyday+race, desktop width")
        assert "unsubscribe" in last.lower()
        # Lazy: frames far below were not fetched when the page opened (the log lists requests).
        console.accessible(script, frames=False)  # inside the frames: emails, not console pages
        console.shoot("campaign-preview")

        page.goto(web.url(f"/admin/campaigns/{BROKEN}"))
        problems = page.locator("#problems").inner_text()
        assert "broken/02-hips-first.mjml" in problems, problems
        assert "does not render" in _frame_text(page, "Step 2 hips-first, trail+race, phone width")
        assert TRAIL_TEXT in _frame_text(page, "Step 1 why-it-hurts, trail+race, phone width")
        console.accessible(script, frames=False)  # inside the frames: emails, not console pages
        assert console.dialogs == [] and console.csp == []
    finally:
        console.close()


def test_the_frame_route_sends_a_policy_of_its_own_and_needs_a_session(web: WebServer) -> None:
    path = f"/admin/campaigns/{CAMPAIGN}/preview/1/trail%2Brace-soon"
    with web.client() as anonymous:
        assert anonymous.get(path, follow_redirects=False).headers["location"] == "/admin/login"
    client = session_client(web, "val.viewer@clinic.example", "viewer")
    answer = client.get(path)
    assert answer.status_code == 200 and TRAIL_TEXT in answer.text
    policy = answer.headers["content-security-policy"]
    directives = dict([*d.strip().split(" ", 1), ""][:2] for d in policy.split(";"))
    assert directives["default-src"] == "'none'" and "script-src" not in directives
    assert directives["frame-ancestors"] == "'self'" and "sandbox" in directives
    assert directives["form-action"] == "'none'" and directives["base-uri"] == "'none'"
    assert re.fullmatch(r"'unsafe-hashes'( 'sha256-[A-Za-z0-9+/=]+')+", directives["style-src"])
    assert answer.headers["x-frame-options"] == "SAMEORIGIN"
    for missing in ("/preview/9/trail%2Brace-soon", "/preview/1/nosuch", "/preview/0/trail%2Brace-soon"):
        assert client.get(f"/admin/campaigns/{CAMPAIGN}{missing}").status_code in (404, 422), missing
    assert client.get("/admin/campaigns/nosuch/preview/1/trail%2Brace-soon").status_code == 404
