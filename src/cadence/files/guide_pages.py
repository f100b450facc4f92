"""A campaign's guide: short public pages, written as Markdown files beside the campaign, that the
emails' buttons link to ("each CTA goes where it says", issue 11); ``cadence web`` serves them at
``/guide/<campaign>/<page>``.

Layout (``campaigns_dir`` is ``CADENCE_CAMPAIGNS_DIR``)::

    campaigns/lower-back-pain.yaml
    campaigns/lower-back-pain/guide/warning-signs.md     ->  /guide/lower-back-pain/warning-signs

A page file starts with a small YAML front matter, then Markdown (CommonMark; raw HTML is shown
as text, never passed through)::

    ---
    title: Warning signs that need a doctor
    description: One line under the title, also the page's meta description.
    ---
    Markdown...

In a campaign's ``context:`` a link may name a page instead of a URL, resolved when the campaign
is loaded (so at compile time, before click tracking wraps it):

- ``guide:<page>`` -> ``{CADENCE_BASE_URL}/guide/<campaign>/<page>``; ``campaigns validate``
  reports a link whose page file is missing or broken, naming the field and the file;
- ``site:/<path>`` -> ``{CADENCE_BASE_URL}/<path>``, another page of ``cadence web`` (the signup form).

Any other value (an absolute URL, for senders who host their own pages) is left as it is. Tools
that only render for review (validate, preview, diff) resolve against :data:`SAMPLE_BASE_URL`,
as they use sample unsubscribe links; the send path resolves against ``CADENCE_BASE_URL``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cadence.errors import CampaignError

if TYPE_CHECKING:  # only the web pages render Markdown; a worker resolves links (issue 15)
    from markdown_it import MarkdownIt

SAMPLE_BASE_URL = "https://example.invalid"
PAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
CAMPAIGN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,79}$")
_GUIDE_LINK = "guide:"
_SITE_LINK = "site:"
_SITE_PATH = re.compile(r"^/[A-Za-z0-9/_.~-]*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_FIELDS = {"title": True, "description": True}  # name -> required
TITLE_MAX = 90
DESCRIPTION_MAX = 200


@dataclass(frozen=True, slots=True)
class GuidePage:
    """One rendered page: `html` is the Markdown body as HTML (safe to insert as is)."""

    campaign_id: str
    name: str
    title: str
    description: str
    html: str


def guide_dir(campaigns_dir: Path, campaign_id: str) -> Path:
    return campaigns_dir / campaign_id / "guide"


def page_file(campaigns_dir: Path, campaign_id: str, page: str) -> Path | None:
    """The file of `page`, or None if the names are not page names, the campaign has no campaign
    file or no such page file exists.
    Names are checked against a strict pattern before touching the disk, so ``..``, slashes and
    encoded tricks never reach a path (path traversal)."""
    if not CAMPAIGN_NAME.match(campaign_id) or not PAGE_NAME.match(page):
        return None
    if not any((campaigns_dir / f"{campaign_id}{suffix}").is_file() for suffix in (".yaml", ".yml")):
        return None  # a folder without its campaign file is no campaign's guide
    path = guide_dir(campaigns_dir, campaign_id) / f"{page}.md"
    return path if path.is_file() else None


def list_pages(campaigns_dir: Path, campaign_id: str) -> list[str]:
    """The page names of a campaign's guide, sorted (files whose names are not page names are skipped)."""
    if not CAMPAIGN_NAME.match(campaign_id):
        return []
    folder = guide_dir(campaigns_dir, campaign_id)
    return sorted(p.stem for p in folder.glob("*.md") if PAGE_NAME.match(p.stem) and p.is_file())


# --- reading a page ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # CommonMark with raw HTML off: a "<script>" in a page file is shown as text. markdown-it also
    # refuses javascript:, vbscript:, file: and most data: link targets (its validateLink).
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "typographer": False})


def read_page(path: Path, campaign_id: str) -> GuidePage:
    """Parse and render one page file; CampaignError naming the file (and the field) if it is bad."""
    stat = path.stat()
    return _read_page(path, campaign_id, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _read_page(path: Path, campaign_id: str, mtime_ns: int, size: int) -> GuidePage:
    # Cached by modification time and size: an edited file is read again, no restart needed.
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CampaignError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise CampaignError(f"{source}:1: no front matter: start the file with ---, title: ..., description: ..., ---")
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 2}" if mark is not None else ""
        raise CampaignError(f"{source}{line}: front matter is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(meta, dict):
        raise CampaignError(f"{source}: front matter must be a mapping with title and description")
    for key in meta:
        if key not in _FIELDS:
            raise CampaignError(f"{source}: front matter: unknown field {key!r} (allowed: {', '.join(_FIELDS)})")
    values: dict[str, str] = {}
    for key, limit in (("title", TITLE_MAX), ("description", DESCRIPTION_MAX)):
        value = meta.get(key)
        if not isinstance(value, str) or not value.strip():
            raise CampaignError(f"{source}: front matter: {key} is missing or empty (one line of text)")
        value = " ".join(value.split())
        if len(value) > limit:
            raise CampaignError(f"{source}: front matter: {key} is {len(value)} characters, over {limit}")
        values[key] = value
    body = text[match.end() :]
    if not body.strip():
        raise CampaignError(f"{source}: the page has no text after its front matter")
    return GuidePage(campaign_id, path.stem, values["title"], values["description"], _markdown().render(body))


# --- links in a campaign's context -------------------------------------------------------------


def resolve_links(
    context: dict[str, Any], *, campaign_id: str, base_url: str, source: str
) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """`context` with every ``guide:<page>`` and ``site:/<path>`` string replaced by its URL under
    `base_url`, and the guide links found as ``(field, page)`` (``("context.guide.recovery",
    "recovery")``) for :func:`guide_link_problems`. CampaignError naming `source` and the field
    for a malformed value. Pure: whether the page files exist is checked by validation, as
    templates are, so a deleted page never stops a campaign that is sending."""
    base = base_url.rstrip("/")
    found: list[tuple[str, str]] = []

    def resolve(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {key: resolve(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item, f"{where}.{index}") for index, item in enumerate(value)]
        if not isinstance(value, str):
            return value
        if value.startswith(_GUIDE_LINK):
            page = value.removeprefix(_GUIDE_LINK)
            if not PAGE_NAME.match(page):
                message = f"{page!r} is not a page name (lowercase letters, digits and -, as in guide:warning-signs)"
                raise CampaignError(f"{source}: {where}: {message}")
            found.append((where, page))
            return f"{base}/guide/{campaign_id}/{page}"
        if value.startswith(_SITE_LINK):
            path = value.removeprefix(_SITE_LINK)
            if not _SITE_PATH.match(path) or "//" in path or "/../" in f"{path}/" or "/./" in f"{path}/":
                raise CampaignError(f"{source}: {where}: {value!r}: write site: and a path, as in site:/subscribe")
            return f"{base}{path}"
        return value

    resolved: dict[str, Any] = resolve(context, "context")
    return resolved, tuple(found)


def guide_link_problems(
    links: tuple[tuple[str, str], ...], *, campaign_id: str, campaigns_dir: Path
) -> list[tuple[str, str]]:
    """``(field, message)`` for every guide link whose page file is missing or does not parse;
    the message names the page file."""
    problems: list[tuple[str, str]] = []
    for where, page in links:
        path = page_file(campaigns_dir, campaign_id, page)
        if path is None:
            expected = guide_dir(campaigns_dir, campaign_id) / f"{page}.md"
            problems.append((where, f"no guide page {page!r}: {expected} does not exist"))
            continue
        try:
            read_page(path, campaign_id)
        except CampaignError as exc:
            problems.append((where, f"guide page {page!r} is broken: {exc}"))
    return problems
