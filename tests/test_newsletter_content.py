"""The newsletter layout and its first issue (issue 11): rendered to HTML and text through the same
two phases as the course, valid by the campaign validator's rules, in the article-free wording
the course keeps, and readable on a phone. The sending feature itself is a separate issue; this
renders the issue as that feature will, with the clinic's values from the course's file."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import jinja2
import pytest

from cadence.core.campaign import Campaign, Segment, Step
from cadence.core.render import RenderedEmail, Renderer, render_email
from cadence.files.campaigns import load_campaign
from cadence.review.previews import SAMPLE_LINKS, screenshot_emails, validate_campaign
from tests.support.services import unavailable
from tests.test_originality import ARTICLE, runs

REPO = Path(__file__).resolve().parents[1]
ISSUE = "newsletters/clinic-news/2027-01-hills-and-your-back.mjml"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def newsletter() -> Campaign:
    course = load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")
    return Campaign(
        id="clinic-news",
        name="Clinic news for runners",
        sender_name=course.sender_name,
        sender_email=course.sender_email,
        timezone=course.timezone,
        segments=(Segment("everyone", "Everyone", fallback=True),),
        steps=(Step("2027-01", ISSUE, timedelta()),),
        context=course.context,
        tracking=replace(course.tracking, utm={**course.tracking.utm, "utm_campaign": "clinic-news"}),
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))


@pytest.fixture(scope="module")
def issue(newsletter: Campaign, renderer: Renderer) -> RenderedEmail:
    variant = renderer.variant(newsletter, newsletter.steps[0], newsletter.segments[0])
    subscriber = {"first_name": "Robin", "email": "robin@example.com", "attributes": {}}
    return render_email(variant, subscriber=subscriber, links=SAMPLE_LINKS)


def test_the_first_issue_validates_clean(newsletter: Campaign, renderer: Renderer) -> None:
    assert validate_campaign(newsletter, renderer) == []


def test_the_newsletter_has_its_own_masthead_not_the_course_header(issue: RenderedEmail) -> None:
    assert issue.subject == "Hills, hips and your low back"
    assert "Clinic news for runners" in issue.text and "January 2027 - monthly" in issue.text
    assert not re.search(r"lesson \d of", issue.text) and "Back course" not in issue.html
    assert "<title>Hills, hips and your low back</title>" in issue.html
    assert "Hi Robin," in issue.text and "Hi Robin," in issue.html


def test_the_text_part_reads_as_the_html_does(issue: RenderedEmail) -> None:
    text = issue.text
    for heading in (
        "Why hills find the weak spot",
        "One move for this month: slow step-downs",
        "From the treatment room",
    ):
        assert f"\n{heading}\n" in text
    assert re.search(r"\* Downhill: .*\n\n", text), "a blank line after the list"
    hrefs = {h.replace("&amp;", "&") for h in re.findall(r'href="(https://[^"]+)"', issue.html)}
    assert hrefs and all(h in text for h in hrefs)
    assert all("utm_campaign=clinic-news" in h for h in hrefs if h.startswith("https://precisionbodywork"))
    assert "1801 W Main St, Suite 200, Richmond, VA 23220" in text
    assert f"Unsubscribe ({SAMPLE_LINKS['unsubscribe']})" in text


def test_the_issue_shares_no_run_of_eight_words_with_the_article(issue: RenderedEmail) -> None:
    if not ARTICLE.is_file():
        unavailable(f"the source article {ARTICLE}", "it lives in ../shared/ next to the repository")
    copied = runs(issue.subject + "\n" + issue.text) & runs(ARTICLE.read_text(encoding="utf-8"))
    assert not copied, copied


def test_the_issue_fits_a_phone(issue: RenderedEmail, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        unavailable("Chromium", "apt-get install chromium (the tests use /usr/bin/chromium)")
    shots = screenshot_emails({"clinic-news-2027-01": issue.html}, tmp_path, executable_path=str(CHROMIUM))
    assert [s.width for s in shots] == [375, 600]
    assert all(s.scroll_width <= s.width for s in shots), [(s.width, s.scroll_width) for s in shots]
