"""The campaign's guide pages (issue 11, "each CTA goes where it says"): Markdown files beside the
campaign, served by the real ``cadence web`` at /guide/<campaign>/<page>; every guide link of
every email resolves to one of them; tracked clicks still land there; broken pages and missing
files are reported by ``cadence campaigns validate`` naming the file and the field."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import jinja2
import pytest

from cadence.core.campaign import Segment, Step
from cadence.core.render import Renderer, render_email
from cadence.errors import CampaignError
from cadence.files.campaigns import load_campaign
from cadence.files.guide_pages import SAMPLE_BASE_URL, list_pages, read_page
from cadence.review.previews import SAMPLE_LINKS, validate_campaign
from tests.support.services import unavailable
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, body, parse, subscribe_and_confirm
from tests.test_course_content import flesch_kincaid_grade
from tests.test_newsletter_content import ISSUE

REPO = Path(__file__).resolve().parents[1]
CAMPAIGN = "lower-back-pain"
PAGES = ["hip-routine", "recovery", "running-form", "warning-signs"]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def page_text(page_html: str) -> str:
    """The visible text of a rendered page body, list items on their own lines."""
    text = re.sub(r"<li>", "\n * ", page_html)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def guide_file(name: str) -> Path:
    return REPO / "campaigns" / CAMPAIGN / "guide" / f"{name}.md"


# --- over HTTP, against the real `cadence web` ------------------------------------------------


def test_the_guide_has_the_four_pages_the_emails_link_to() -> None:
    assert list_pages(REPO / "campaigns", CAMPAIGN) == PAGES


@pytest.mark.parametrize("name", PAGES)
def test_each_guide_page_is_served_in_the_subscriber_pages_frame(web: WebServer, name: str) -> None:
    page = read_page(guide_file(name), CAMPAIGN)
    response = httpx.get(web.url(f"/guide/{CAMPAIGN}/{name}"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert f"<h1>{html.escape(page.title)}</h1>" in response.text
    assert f'<meta name="description" content="{html.escape(page.description)}">' in response.text
    assert '<link rel="stylesheet" href="/static/cadence.css">' in response.text
    # Strict CSP as everywhere, and no script of any kind on the page.
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "<script" not in response.text and " style=" not in response.text
    # Public pages: indexable and cacheable, no cookie.
    assert "x-robots-tag" not in response.headers
    assert response.headers["cache-control"] == "public, max-age=300"
    assert "set-cookie" not in response.headers
    # The other pages of the guide are one click away.
    for other in PAGES:
        if other != name:
            assert f'<a href="{other}">' in response.text


def test_every_link_on_every_guide_page_leads_somewhere(web: WebServer) -> None:
    checked: set[str] = set()
    for name in PAGES:
        url = web.url(f"/guide/{CAMPAIGN}/{name}")
        page = httpx.get(url).text
        for href in re.findall(r'href="([^"]+)"', page):
            target = urljoin(url, html.unescape(href))
            if not target.startswith(web.base_url) or target in checked:
                continue  # tel: links
            checked.add(target)
            assert httpx.get(target).status_code == 200, f"{name}: {href} -> {target}"
    assert web.url(f"/guide/{CAMPAIGN}/warning-signs") in checked and web.url("/subscribe") in checked


@pytest.mark.parametrize(
    "path",
    [
        f"/guide/{CAMPAIGN}/no-such-page",
        "/guide/no-such-campaign/warning-signs",
        "/guide/lower-back-pain.yaml/warning-signs",
        f"/guide/{CAMPAIGN}/warning-signs.md",
        f"/guide/{CAMPAIGN}/Warning-Signs",
        f"/guide/{CAMPAIGN}",
        # Path traversal: a dot-dot, encoded slashes and dots, the campaign file itself.
        f"/guide/{CAMPAIGN}/..",
        f"/guide/{CAMPAIGN}/%2e%2e",
        f"/guide/{CAMPAIGN}/..%2f..%2f{CAMPAIGN}.yaml",
        f"/guide/{CAMPAIGN}/%2e%2e%2f%2e%2e%2f{CAMPAIGN}",
        f"/guide/..%2f{CAMPAIGN}/guide/warning-signs",
        "/guide/..%2f..%2fsrc%2fcadence/config",
        f"/guide/{CAMPAIGN}/..%5c..%5c{CAMPAIGN}",
        f"/guide/{CAMPAIGN}/warning-signs%00",
    ],
)
def test_an_unknown_page_or_a_path_outside_the_guide_is_the_404_page(web: WebServer, path: str) -> None:
    response = httpx.get(web.url(path))
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text
    assert "send_window" not in response.text and "title:" not in response.text


def test_dot_segments_sent_as_they_are_do_not_leave_the_guide(web: WebServer) -> None:
    # httpx would normalise "/../" away; a raw request line reaches the server unchanged.
    import socket

    for target in (f"/guide/{CAMPAIGN}/../../{CAMPAIGN}.yaml", f"/guide/{CAMPAIGN}/../{CAMPAIGN}/../warning-signs"):
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = reply.split(b"\r\n", 1)[0]
        assert b" 404 " in status, (target, status)
        assert b"send_window" not in reply


@pytest.fixture
def browser_page() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable("Chromium at /usr/bin/chromium", "apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(viewport={"width": 375, "height": 812}).new_page()
        finally:
            browser.close()


def test_guide_pages_fit_a_375px_phone_without_sideways_scrolling(web: WebServer, browser_page: Any) -> None:
    errors: list[str] = []
    browser_page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    for name in PAGES:
        browser_page.goto(web.url(f"/guide/{CAMPAIGN}/{name}"))
        width = browser_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{name}: {width}px wide at 375px"
        # The stylesheet applied (CSP allowed it): the header is the clinic's teal.
        colour = browser_page.evaluate("getComputedStyle(document.querySelector('.site-header')).backgroundColor")
        assert colour == "rgb(29, 91, 99)"
    assert errors == [], errors  # no CSP violation or missing resource reported by the browser


# --- the emails' links ---------------------------------------------------------------------


def _guide_and_site_links(email_html: str) -> set[str]:
    hrefs = {html.unescape(h) for h in re.findall(r'href="([^"]+)"', email_html)}
    return {h for h in hrefs if h.startswith(SAMPLE_BASE_URL + "/")}


def test_every_guide_link_in_every_email_opens_an_existing_page(web: WebServer) -> None:
    campaign = load_campaign(REPO / "campaigns" / f"{CAMPAIGN}.yaml")
    renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
    assert validate_campaign(campaign, renderer) == []
    subscriber = {"first_name": "Jordan", "email": "jordan@example.com", "attributes": {}}
    linked: set[str] = set()
    for step in campaign.steps:
        for segment in campaign.segments:
            email = render_email(renderer.variant(campaign, step, segment), subscriber=subscriber, links=SAMPLE_LINKS)
            assert "/runners/low-back" not in email.html
            linked |= _guide_and_site_links(email.html) - set(SAMPLE_LINKS.values())
    # The newsletter's "Join our seven-lesson back course" button goes to the signup form.
    issue_campaign = replace(
        campaign, id="clinic-news", segments=(Segment("everyone", "Everyone", fallback=True),),
        steps=(Step("2027-01", ISSUE, timedelta()),), facets=(),
    )
    variant = renderer.variant(issue_campaign, issue_campaign.steps[0], issue_campaign.segments[0])
    issue = render_email(variant, subscriber=subscriber, links=SAMPLE_LINKS)
    assert re.search(r'href="https://example\.invalid/subscribe"[^>]*>\s*Join our seven-lesson back course', issue.html)
    linked |= _guide_and_site_links(issue.html) - set(SAMPLE_LINKS.values())
    paths = {urlsplit(url).path for url in linked}
    assert {f"/guide/{CAMPAIGN}/{name}" for name in PAGES} <= paths, paths
    for path in sorted(paths):
        assert httpx.get(web.url(path)).status_code == 200, path


def test_a_tracked_click_on_a_guide_button_lands_on_the_guide_page(web: WebServer, web_sink: SmtpSink) -> None:
    """Lesson 2 as received: its guide links are click-tracked (/c/...) and redirect to the
    page under CADENCE_BASE_URL, which is served."""
    subscribe_and_confirm(web, web_sink, "guide-reader@example.com")
    before = len(web_sink.messages)
    web.clock.advance(timedelta(days=2))
    assert web.drive() == 1
    lesson = parse(web_sink.wait_for(before + 1)[-1])
    page_html = body(lesson, "html")
    tracked = sorted({html.unescape(h) for h in re.findall(r'href="(http[^"]+/c/[^"]+)"', page_html)})
    landed = {}
    for url in tracked:
        response = httpx.get(url, follow_redirects=False)
        assert response.status_code in (302, 303, 307), url
        landed[response.headers["location"].split("?")[0]] = url
    hip_routine, warning_signs = (web.url(f"/guide/{CAMPAIGN}/{n}") for n in ("hip-routine", "warning-signs"))
    assert hip_routine in landed and warning_signs in landed, landed
    assert f'href="{hip_routine}' not in page_html  # never an untracked copy of the link
    for target in (hip_routine, warning_signs):
        assert httpx.get(landed[target], follow_redirects=True).url.path == urlsplit(target).path


# --- what the pages say ---------------------------------------------------------------------


def test_the_warning_signs_page_lists_both_tiers_as_the_emails_do() -> None:
    partial = (REPO / "templates" / "lower-back-pain" / "partials" / "warning-signs.mjml").read_text()
    tiers = re.findall(r"<ul>(.*?)</ul>", partial, re.DOTALL)
    email_tiers = [[html.unescape(re.sub(r"&rsquo;", "'", i)).rstrip(";.") for i in re.findall(r"<li>(.*?)</li>", t)]
                   for t in tiers]
    page = read_page(guide_file("warning-signs"), CAMPAIGN)
    today, soon = re.split(r"<h2>See a doctor within a few days</h2>", page.html)
    assert "<h2>Get medical help today</h2>" in today
    for items, section in zip(email_tiers, (today.split("<h2>Get medical help today</h2>")[1], soon), strict=True):
        text = page_text(section)
        for item in items:
            assert item in text, item
    # Safety first: the tiers open the page, and the clinic says it refers on.
    assert page.html.index("Get medical help today") < page.html.index("<h2>When a run")
    assert "refer you to a physician" in page.html


@pytest.mark.parametrize("name", PAGES)
def test_each_guide_page_reads_at_grade_eight_or_below(name: str) -> None:
    page = read_page(guide_file(name), CAMPAIGN)
    text = f"{page.title}.\n\n{page.description}\n\n{page_text(page.html)}"
    grade = flesch_kincaid_grade(text)
    assert grade <= 8, (name, round(grade, 1))


# --- bad inputs -------------------------------------------------------------------------------


@pytest.fixture
def campaigns_copy(tmp_path: Path) -> Path:
    """A copy of the campaigns folder to break."""
    folder = tmp_path / "campaigns"
    shutil.copytree(REPO / "campaigns", folder)
    return folder


def cadence(*args: str, campaigns: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("cadence")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cadence"]
    env = {**os.environ, "CADENCE_DATA_DIR": str(campaigns.parent / "data"), "COLUMNS": "200"}
    return subprocess.run(
        [*command, *args, "--campaigns-dir", str(campaigns), "--templates-dir", str(REPO / "templates")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )


def test_validate_names_the_field_and_the_file_of_a_missing_guide_page(campaigns_copy: Path) -> None:
    (campaigns_copy / CAMPAIGN / "guide" / "recovery.md").unlink()
    result = cadence("campaigns", "validate", CAMPAIGN, campaigns=campaigns_copy)
    assert result.returncode == 1
    out = " ".join((result.stdout + result.stderr).split())
    assert "context.guide.recovery: no guide page 'recovery'" in out
    assert f"{campaigns_copy / CAMPAIGN / 'guide' / 'recovery.md'} does not exist" in out
    assert "Traceback" not in result.stderr


def test_validate_names_the_page_file_with_bad_front_matter(campaigns_copy: Path) -> None:
    page = campaigns_copy / CAMPAIGN / "guide" / "hip-routine.md"
    page.write_text(page.read_text().replace("title: The hip routine, move by move\n", ""))
    result = cadence("campaigns", "validate", CAMPAIGN, campaigns=campaigns_copy)
    assert result.returncode == 1
    out = " ".join((result.stdout + result.stderr).split())
    assert "context.guide.hip_routine: guide page 'hip-routine' is broken" in out
    assert f"{page}: front matter: title is missing or empty" in out
    assert "Traceback" not in result.stderr


def test_a_malformed_guide_link_fails_naming_the_field(campaigns_copy: Path) -> None:
    path = campaigns_copy / f"{CAMPAIGN}.yaml"
    path.write_text(path.read_text().replace("recovery: guide:recovery", "recovery: guide:../recovery"))
    result = cadence("campaigns", "validate", CAMPAIGN, campaigns=campaigns_copy)
    assert result.returncode == 1
    assert f"{path}: context.guide.recovery: '../recovery' is not a page name" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("# No front matter\n", ":1: no front matter"),
        ("---\ntitle: [unclosed\n---\nText.\n", ":2: front matter is not valid YAML"),
        ("---\n- a list\n---\nText.\n", "front matter must be a mapping"),
        ("---\ntitle: T\ndescription: D\nauthor: Dr Who\n---\nText.\n", "front matter: unknown field 'author'"),
        ("---\ntitle: T\n---\nText.\n", "front matter: description is missing or empty"),
        ("---\ntitle: T\ndescription: D\n---\n\n", "the page has no text after its front matter"),
        (b"---\ntitle: T\xff\n---\n", "not UTF-8 text"),
    ],
)
def test_a_bad_page_file_is_an_error_naming_the_file(tmp_path: Path, content: str | bytes, expected: str) -> None:
    page = tmp_path / "page.md"
    if isinstance(content, bytes):
        page.write_bytes(content)
    else:
        page.write_text(content)
    with pytest.raises(CampaignError) as caught:
        read_page(page, CAMPAIGN)
    assert str(caught.value).startswith(str(page))
    assert expected in str(caught.value)


def test_raw_html_and_script_links_in_a_page_file_are_shown_as_text_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "---\ntitle: <b>Bold</b> title\ndescription: Plain.\n---\n"
        "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n"
        "[click](javascript:alert(3)) and [ok](warning-signs)\n"
    )
    rendered = read_page(page, CAMPAIGN)
    assert "<script" not in rendered.html and "<img" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert 'href="javascript:' not in rendered.html and '<a href="warning-signs">ok</a>' in rendered.html
    assert rendered.title == "<b>Bold</b> title"  # escaped by the page template, as every value is


def test_a_hostile_page_file_is_escaped_over_http(tmp_path: Path, web_sink: SmtpSink, campaigns_copy: Path) -> None:
    (campaigns_copy / CAMPAIGN / "guide" / "hostile.md").write_text(
        '---\ntitle: <script>alert("t")</script>\ndescription: x" onload="alert(1)\n---\n<script>alert(2)</script>\n'
    )
    with WebServer(tmp_path, web_sink, extra_env={"CADENCE_CAMPAIGNS_DIR": str(campaigns_copy)}) as web:
        response = httpx.get(web.url(f"/guide/{CAMPAIGN}/hostile"))
    assert response.status_code == 200
    assert "<script" not in response.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in response.text
    assert 'content="x&#34; onload=&#34;alert(1)"' in response.text or 'content="x&quot; onload' in response.text
