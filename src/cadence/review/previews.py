"""Staff tools for writing campaigns: validate every email, preview them, simulate the timeline.

``validate_campaign`` renders every step x segment with sample subscribers (always including one
with an empty first name and one whose name is HTML) and reports each finding with the template
file and line where it can be known. ``write_preview`` writes the emails and a grid to look at
them side by side at phone and desktop widths; ``screenshot_emails`` photographs them in real
headless Chromium. ``simulate_timeline`` says when each email would reach one subscriber.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cadence.core.campaign import Campaign, Segment, Step
from cadence.core.render import CompiledVariant, RenderedEmail, Renderer, render_email
from cadence.core.schedule import step_due_at
from cadence.core.segments import choose_segment
from cadence.errors import TemplateError
from cadence.files.guide_pages import guide_link_problems

SUBJECT_MAX = 70  # longer subjects are cut off in most inbox list views
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail clips HTML bodies over 102 KB, hiding the footer and unsubscribe
HTML_NAME = "<img src=x onerror=alert(1)>"

SAMPLE_LINKS: dict[str, str] = {
    "unsubscribe": "https://example.invalid/u/sample-unsubscribe-token",
    "preferences": "https://example.invalid/p/sample-preferences-token",
    "web_view": "https://example.invalid/v/sample-web-view-token",
}
DEFAULT_SAMPLE_SUBSCRIBERS: tuple[Mapping[str, Any], ...] = (
    {"first_name": "Jordan", "email": "jordan@example.com", "attributes": {}},
)
# Always rendered too: the cases that break templates in production.
EDGE_CASE_SUBSCRIBERS: tuple[Mapping[str, Any], ...] = (
    {"first_name": "", "email": "no-name@example.com", "attributes": {}},
    {"first_name": HTML_NAME, "email": "html-name@example.com", "attributes": {}},
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. `file` is a template name (relative to the template root) or, for problems
    in the campaign itself, the campaign file."""

    file: str
    line: int | None
    message: str
    step_id: str | None = None
    segment_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        variant = f" [{self.step_id}/{self.segment_id}]" if self.step_id else ""
        return f"{where}: {self.message}{variant}"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    step_id: str
    segment_id: str
    send_at_utc: datetime
    send_at_local: datetime


def validate_campaign(
    campaign: Campaign,
    renderer: Renderer,
    *,
    sample_subscribers: Sequence[Mapping[str, Any]] = DEFAULT_SAMPLE_SUBSCRIBERS,
) -> list[Problem]:
    """Every problem found in every step x segment, duplicates (a shared layout) reported once."""
    found: dict[tuple[str, int | None, str], Problem] = {}
    samples = [*sample_subscribers, *EDGE_CASE_SUBSCRIBERS]
    clinic = campaign.context.get("clinic")
    address = clinic.get("postal_address") if isinstance(clinic, dict) else None
    if not isinstance(address, str) or not address.strip():
        message = (
            "context.clinic.postal_address is missing: commercial email must carry a physical "
            "postal address (CAN-SPAM, 15 U.S.C. 7704(a)(5))"
        )
        problem = Problem(campaign.source or campaign.id, None, message)
        found[(problem.file, None, problem.message)] = problem
        address = None
    if campaign.guide_links and campaign.source:
        # Guide pages live beside the campaign file (campaigns/<id>/guide/<page>.md, issue 11).
        pages_at = Path(campaign.source).parent
        missing = guide_link_problems(campaign.guide_links, campaign_id=campaign.id, campaigns_dir=pages_at)
        for where, message in missing:
            problem = Problem(campaign.source, None, f"{where}: {message}")
            found[(problem.file, None, problem.message)] = problem
    for step in campaign.steps:
        for segment in campaign.segments:
            for problem in _check_variant(campaign, renderer, step, segment, samples, address):
                found.setdefault((problem.file, problem.line, problem.message), problem)
    return list(found.values())


def _check_variant(
    campaign: Campaign,
    renderer: Renderer,
    step: Step,
    segment: Segment,
    samples: Sequence[Mapping[str, Any]],
    address: str | None,
) -> Iterable[Problem]:
    def problem(where: tuple[str, int | None], message: str) -> Problem:
        return Problem(where[0], where[1], message, step.id, segment.id)

    try:
        variant = renderer.variant(campaign, step, segment)
    except TemplateError as exc:
        yield problem((exc.template or step.template, exc.line), _bare(exc))
        return
    rendered: list[tuple[Mapping[str, Any], RenderedEmail]] = []
    failures: list[tuple[Mapping[str, Any], TemplateError]] = []
    for sample in samples:
        try:
            rendered.append((sample, render_email(variant, subscriber=sample, links=SAMPLE_LINKS)))
        except TemplateError as exc:
            failures.append((sample, exc))
    for sample, error in failures[:1]:
        only = f" (only with first name {sample.get('first_name')!r})" if rendered else ""
        yield problem((error.template or variant.template, error.line), _bare(error) + only)
    if not rendered:
        return
    subject_at = _locate(variant, "block subject", "<mj-title")
    for _, email in rendered:
        if not email.subject:
            yield problem(subject_at, "the subject is empty: fill <mj-title> ({% block subject %})")
            break
        if len(email.subject) > SUBJECT_MAX:
            message = f"the subject is {len(email.subject)} characters, over {SUBJECT_MAX}: {email.subject!r}"
            yield problem(subject_at, message)
            break
    if not variant.preheader_source:
        message = "no preheader: add <mj-preview> text, or inboxes show the first words of the body"
        yield problem(_locate(variant, "block preheader", "<mj-preview"), message)
    yield from (problem(w, m) for w, m in _image_problems(variant))
    yield from (problem(w, m) for w, m in _link_problems(variant, campaign))
    yield from (problem(w, m) for w, m in _tag_problems(variant))
    for sample, email in rendered:
        issues = _output_problems(variant, email, address, sample)
        yield from (problem(w, m) for w, m in issues)


def _output_problems(
    variant: CompiledVariant, email: RenderedEmail, address: str | None, sample: Mapping[str, Any]
) -> Iterable[tuple[tuple[str, int | None], str]]:
    entry = (variant.template, None)
    size = len(email.html.encode())
    if size > GMAIL_CLIP_BYTES:
        yield entry, f"the HTML is {size / 1024:.0f} KB; Gmail clips messages over 102 KB (the footer disappears)"
    if address is not None:
        flat = " ".join(address.split())
        visible = " ".join(html.unescape(_TAGS.sub(" ", email.html)).split())
        if flat not in visible or flat not in " ".join(email.text.split()):
            hint = "print {{ clinic.postal_address }} in the footer"
            yield entry, f"the postal address {flat!r} is not in the email (CAN-SPAM): {hint}"
    unsubscribe = SAMPLE_LINKS["unsubscribe"]
    if f'href="{unsubscribe}"' not in email.html or unsubscribe not in email.text:
        yield entry, 'no unsubscribe link: put <a href="[[ links.unsubscribe ]]"> in the footer'
    if sample.get("first_name") == HTML_NAME and HTML_NAME in email.html:
        yield _locate(variant, "|safe", "| safe"), "a subscriber value is printed unescaped in the HTML (|safe?)"


_TAGS = re.compile(r"<[^>]+>")
_COMMENTS = re.compile(r"\{#.*?#\}|<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"<(mj-image|img)\b[^>]*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"\bhref\s*=\s*([\"'])(.*?)\1", re.IGNORECASE | re.DOTALL)
_BUTTON_MAILTO = re.compile(r"<mj-button\b[^>]*\bhref\s*=\s*[\"']\s*mailto:", re.IGNORECASE)
_MJ_TAG = re.compile(r"<(mj-[a-z0-9-]+)", re.IGNORECASE)


def _blank_comments(source: str) -> str:
    """Comments emptied but their newlines kept, so offsets still give the right line."""
    return _COMMENTS.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _locate(variant: CompiledVariant, *needles: str) -> tuple[str, int | None]:
    """The first line holding one of `needles`, searching the entry template, then its parents."""
    for needle in needles:
        for name, source in variant.sources:
            position = _blank_comments(source).find(needle)
            if position >= 0:
                return name, _line_of(source, position)
    return variant.template, None


def _image_problems(variant: CompiledVariant) -> Iterable[tuple[tuple[str, int | None], str]]:
    found = 0
    for name, source in variant.sources:
        for m in _IMAGE.finditer(_blank_comments(source)):
            if not re.search(r"\balt\s*=", m.group(0), re.IGNORECASE):
                found += 1
                yield (name, _line_of(source, m.start())), f"<{m.group(1)}> has no alt text"
    missing = [m for m in re.finditer(r"<img\b[^>]*>", variant.html_source) if " alt=" not in m.group(0)]
    if missing and not found:
        yield (variant.template, None), f"{len(missing)} image(s) without alt text in the HTML"


def _link_problems(variant: CompiledVariant, campaign: Campaign) -> Iterable[tuple[tuple[str, int | None], str]]:
    """Links as authored (phase-1 output, before UTM parameters and click tracking)."""
    https = mailto = 0
    for m in _HREF.finditer(variant.mjml):
        href = html.unescape(m.group(2)).strip()
        scheme = href.split(":", 1)[0].lower() if ":" in href else ""
        if href.startswith("[[") or scheme in ("https", "tel"):
            https += scheme == "https"
            continue
        if scheme == "mailto":
            mailto += 1
            continue
        where = _locate_href(variant, campaign, m.group(2), href)
        if scheme == "http":
            yield where, f"insecure link {href!r}: use https://"
        elif scheme == "javascript":
            yield where, f"javascript: link {href!r}: mail clients strip it and spam filters flag it"
        else:
            yield where, f"link {href!r} is not an absolute https:// URL"
    if _BUTTON_MAILTO.search(variant.mjml):
        yield (
            _locate(variant, "mailto:"),
            "a mailto: link as the button: link to a page, offer email as a secondary link",
        )
    if mailto and not https:
        yield _locate(variant, "mailto:"), "mailto: is the only link: mailto is allowed only as a secondary link"


def _locate_href(variant: CompiledVariant, campaign: Campaign, raw: str, href: str) -> tuple[str, int | None]:
    for needle in (raw, href, html.escape(href)):
        where = _locate(variant, f'"{needle}"') if needle else (variant.template, None)
        if where[1] is not None:
            return where
    # Built from a {{ variable }}: the value lives in the campaign file (context).
    if any(isinstance(v, str) and href.startswith(v) for v in _strings(campaign.context)):
        return campaign.source or campaign.id, None
    return variant.template, None


def _strings(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str) and value:
        yield value


def _tag_problems(variant: CompiledVariant) -> Iterable[tuple[tuple[str, int | None], str]]:
    """MJML passes unknown mj-* tags through as they are (mrml); a typo silently vanishes."""
    for tag in dict.fromkeys(t.lower() for t in _MJ_TAG.findall(variant.html_source)):
        yield _locate(variant, f"<{tag}"), f"unknown MJML tag <{tag}> (a typo? it reaches the email as is)"


def _bare(exc: TemplateError) -> str:
    """The message without the "file:line: " prefix TemplateError adds (Problem prints it)."""
    text = str(exc)
    if exc.template:
        prefix = f"{exc.template}:{exc.line}: " if exc.line else f"{exc.template}: "
        text = text.removeprefix(prefix)
    return text


# --- preview ---------------------------------------------------------------------------------


def email_grid(campaign: Campaign) -> list[tuple[Step, list[Segment]]]:
    """Every email a campaign can send, as the preview grid shows them: one row per step, one
    column per segment. ``campaigns diff`` compares exactly these emails."""
    return [(step, list(campaign.segments)) for step in campaign.steps]


def preview_file_name(campaign: Campaign, step: Step, segment: Segment) -> str:
    number = campaign.steps.index(step) + 1
    return f"{number:02d}-{step.id}--{segment.id}.html"


def preview_email(
    campaign: Campaign,
    renderer: Renderer,
    step: Step,
    segment: Segment,
    *,
    subscriber: Mapping[str, Any] = DEFAULT_SAMPLE_SUBSCRIBERS[0],
) -> tuple[CompiledVariant, RenderedEmail]:
    """One cell of the preview grid: the step's email as this segment gets it, for the sample
    `subscriber`, with sample links. TemplateError if it does not render. The preview folder
    (:func:`write_preview`) and the console's preview grid both show exactly this."""
    variant = renderer.variant(campaign, step, segment)
    return variant, render_email(variant, subscriber=subscriber, links=SAMPLE_LINKS)


def find_cell(campaign: Campaign, step_number: int, segment_id: str) -> tuple[Step, Segment] | None:
    """The grid's step (1-based) and segment, or None if the campaign has no such cell."""
    if not 1 <= step_number <= len(campaign.steps):
        return None
    segment = next((s for s in campaign.segments if s.id == segment_id), None)
    return None if segment is None else (campaign.steps[step_number - 1], segment)


def write_preview(
    campaign: Campaign,
    renderer: Renderer,
    out_dir: Path,
    *,
    subscriber: Mapping[str, Any] = DEFAULT_SAMPLE_SUBSCRIBERS[0],
) -> Path:
    """Write every step x segment as HTML and an ``index.html`` grid; returns the index's path.

    The grid has steps down and segments across; each cell shows the subject, the preheader and
    the email at phone (375 px) and desktop (600 px) widths. An email that fails to render shows
    its error in its cell instead.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    head = "".join(f"<th>{html.escape(s.name)}<br><small>{html.escape(s.id)}</small></th>" for s in campaign.segments)
    rows = []
    for number, (step, segments) in enumerate(email_grid(campaign), 1):
        cells = []
        for segment in segments:
            try:
                variant, email = preview_email(campaign, renderer, step, segment, subscriber=subscriber)
            except TemplateError as exc:
                cells.append(f'<td><pre class="error">{html.escape(str(exc))}</pre></td>')
                continue
            name = preview_file_name(campaign, step, segment)
            (out_dir / name).write_text(email.html, encoding="utf-8")
            cells.append(
                f'<td><p class="subject">{html.escape(email.subject)} <small>({len(email.subject)})</small></p>'
                f'<p class="preheader">{html.escape(variant.preheader_source)}</p>'
                f'<div class="frames"><iframe src="{name}" width="375" height="900" title="375 px"></iframe>'
                f'<iframe src="{name}" width="600" height="900" title="600 px"></iframe></div>'
                f'<p><a href="{name}">open</a> · {html.escape(variant.template)}</p></td>'
            )
        rows.append(f"<tr><th>{number}<br><small>{html.escape(step.id)}</small></th>{''.join(cells)}</tr>")
    index = out_dir / "index.html"
    index.write_text(_INDEX.format(title=html.escape(campaign.name), head=head, rows="\n".join(rows)), "utf-8")
    return index


_INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Preview: {title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px; background: #eee; }}
table {{ border-collapse: collapse; }}
th, td {{ vertical-align: top; padding: 8px; border: 1px solid #ccc; background: #fff; }}
.subject {{ font-weight: 600; margin: 0 0 4px; }}
.preheader {{ color: #555; margin: 0 0 8px; max-width: 990px; }}
.frames {{ display: flex; gap: 12px; align-items: flex-start; }}
iframe {{ border: 1px solid #bbb; background: #fff; }}
.error {{ color: #a00; white-space: pre-wrap; max-width: 600px; }}
</style></head>
<body><h1>{title}</h1>
<table><tr><th>Step</th>{head}</tr>
{rows}
</table></body></html>
"""


@dataclass(frozen=True, slots=True)
class Screenshot:
    name: str
    width: int
    path: Path
    scroll_width: int  # document.documentElement.scrollWidth: > width means horizontal scrolling


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshot_emails(
    emails: Mapping[str, str],
    out_dir: Path,
    *,
    widths: Sequence[int] = (375, 600),
    executable_path: str = "/usr/bin/chromium",
) -> list[Screenshot]:
    """Full-page PNGs of each ``name -> html`` at each width, in the system's headless Chromium.

    Every network request is refused (images, fonts): the result depends only on the HTML, and
    nothing is fetched, which is also how many mail clients show an email at first.
    """
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots: list[Screenshot] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.abort())
            for name, body in emails.items():
                for width in widths:
                    page.set_viewport_size({"width": width, "height": 800})
                    page.set_content(body, wait_until="load")
                    path = out_dir / f"{Path(name).stem}-{width}.png"
                    page.screenshot(path=str(path), full_page=True)
                    scroll = int(page.evaluate("document.documentElement.scrollWidth"))
                    shots.append(Screenshot(name, width, path, scroll))
        finally:
            browser.close()
    return shots


# --- timeline ----------------------------------------------------------------------------------


def simulate_timeline(
    campaign: Campaign, attributes: Mapping[str, Any], tz: ZoneInfo, enrolled_at: datetime
) -> list[TimelineEntry]:
    """When each step would reach a subscriber with `attributes` in `tz`, enrolled at `enrolled_at`,
    assuming every step is sent at its due time. The segment is chosen for each step on its send
    date, as the send path does (weeks to a race change as the course goes on)."""
    entries: list[TimelineEntry] = []
    previous: datetime | None = None
    for index, step in enumerate(campaign.steps):
        due = step_due_at(campaign, index, enrolled_at=enrolled_at, previous_sent_at=previous, tz=tz)
        segment = choose_segment(campaign.segments, attributes, due.astimezone(tz).date())
        entries.append(TimelineEntry(step.id, segment.id, due, due.astimezone(tz)))
        previous = due
    return entries
