"""From MJML's compiled HTML to the sources of the phase-2 templates (part of :mod:`render`).

Pure string work: the subject from ``<title>``, the preheader from ``<mj-preview>``, every
http(s) link collected (UTM parameters added for the clinic's own site) and replaced by a
phase-2 call, and the plain-text part derived once with inscriptis with its links kept.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig

LINKS_VARIABLE = "_cadence_links"
PHASE2_TAG = re.compile(r"\[\[.*?\]\]|\[%.*?%\]", re.DOTALL)

_ANCHOR = re.compile(r"<a\b([^>]*?)\bhref\s*=\s*([\"'])(.*?)\2([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_ARIA_LABEL = re.compile(r'aria-label="(?:[^"\\]|\\.)*"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_PREVIEW = re.compile(r"<mj-preview\b[^>]*>(.*?)</mj-preview>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
# MJML hides the preheader (<mj-preview>) in a display:none div. Hidden text is what spam filters
# look for: rspamd scores it MANY_INVISIBLE_PARTS (rules/html.lua), and SpamAssassin scored the
# white text MJML gives it as HTML_FONT_LOW_CONTRAST (0.7). So nothing is hidden: the preheader
# is the first line of the email, in the footer's muted type, as the first child of the body
# wrapper (so dark mode's page colour is behind it). Inboxes still show it as the preview, because
# it is the first text; the text part opens with it too.
_PREHEADER_HIDDEN = re.compile(
    r'<div style="display:none;font-size:1px;color:#ffffff;[^"]*">(.*?)</div>(\s*<div\b[^>]*>)', re.DOTALL
)
_FONT_FAMILY = re.compile(r"font-family:([^;\"]+)")
_PREHEADER_STYLE = "max-width:544px;margin:0 auto;padding:16px 28px 0;font-size:16px;line-height:1.5;color:#3f4b55;"
_PREHEADER_DARK = (
    "<style>@media (prefers-color-scheme: dark) { .cd-preheader { color: #b9c2c8 !important; } }</style></head>"
)
_CENTRED = re.compile(r"(\balign\s*=\s*[\"']?|text-align\s*:\s*)(?:center|right)", re.IGNORECASE)
# Links staff never want decorated with UTM parameters, even on the clinic's own host.
_NO_UTM_PATH = re.compile(r"/(unsubscribe|preferences|view|web-view|webview)\b", re.IGNORECASE)
# The 'strict' profile keeps display:none hidden and adds no spacing the HTML doesn't ask for.
# Links are written by _rewrite_links, not by inscriptis' [text](url).
_TEXT_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=False)


@dataclass(frozen=True, slots=True)
class Phase2Sources:
    subject: str
    preheader: str
    html: str
    text: str
    links: tuple[str, ...]


def phase2_sources(compiled_html: str, mjml: str, *, utm: dict[str, str], website: Any) -> Phase2Sources:
    """Split MJML's output into the subject, HTML and text sources of phase 2.

    `website` is the clinic's site (``campaign.context['clinic']['website']``, if any): links to
    its host get the `utm` parameters.
    """
    # mrml copies <mj-title> into aria-label with quotes written as \" (not HTML: the attribute
    # would end at the first quote); write them as &quot;. Inside phase-2 tags jinja must see each
    # expression as it was written, so entities there are decoded again.
    compiled_html = _ARIA_LABEL.sub(lambda m: m.group(0).replace('\\"', "&quot;"), compiled_html)
    compiled_html = PHASE2_TAG.sub(lambda m: html.unescape(m.group(0)), compiled_html)
    compiled_html = _visible_preheader(compiled_html)
    title = _TITLE.search(compiled_html)
    subject = " ".join(html.unescape(title.group(1)).split()) if title else ""
    preview = _PREVIEW.search(mjml)
    preheader = " ".join(html.unescape(_TAGS.sub("", preview.group(1))).split()) if preview else ""
    own_host = urlsplit(website).hostname if isinstance(website, str) else None
    html_source, text_html, links = _rewrite_links(compiled_html, utm, own_host)
    html_source = _LINE_STARTING_WITH_DOT.sub(" .", wrap_long_lines(ascii_html(html_source)))
    # Centred footers read badly as plain text once padded with spaces: align everything left.
    text_html = _CENTRED.sub(lambda m: m.group(1) + "left", text_html)
    return Phase2Sources(subject, preheader, html_source, _tidy_text(get_text(text_html, _TEXT_CONFIG)), links)


def _visible_preheader(compiled_html: str) -> str:
    """MJML's hidden preheader div as the visible first line of the body wrapper (see above)."""
    hidden = _PREHEADER_HIDDEN.search(compiled_html)
    if hidden is None:
        return compiled_html
    font = _FONT_FAMILY.search(compiled_html, hidden.end())
    family = f"font-family:{font.group(1)};" if font else ""
    line = f'<p class="cd-preheader" style="{_PREHEADER_STYLE}{family}">{hidden.group(1)}</p>'
    compiled_html = compiled_html[: hidden.start()] + hidden.group(2) + line + compiled_html[hidden.end() :]
    return compiled_html.replace("</head>", _PREHEADER_DARK, 1)


# Where a line may break without changing what the HTML means or shows: a space between a
# closing quote and the next attribute of a tag (replaced by the line break), and right after
# the end of a block of text or a table row or cell, where whitespace is never rendered. Never
# inside text, so a phrase searched for in the HTML is found as written, and never next to the
# inline-block <div>s of MJML columns, where whitespace would show as a gap.
_ATTRIBUTE_GAP = re.compile(r'(?<=") (?=[A-Za-z_:][-\w:.]*=")')
_AFTER_BLOCK = re.compile(r"</(?:p|li|h[1-6]|ul|ol|tr|td|th|tbody|table)>|<(?:ul|ol|tbody|tr)>", re.IGNORECASE)
WRAP_WIDTH = 200
# A line that starts with "." (a CSS selector in MJML's <style>) must be dot-stuffed by every
# SMTP client (RFC 5321 §4.5.2), a copy of the whole 23 KB message each time; a leading space
# means the same in CSS and in HTML text, and the message goes out as it is.
_LINE_STARTING_WITH_DOT = re.compile(r"^\.", re.MULTILINE)


_KEEP_AS_WRITTEN = re.compile(r"<(style|script)\b.*?</\1\s*>|" + PHASE2_TAG.pattern, re.IGNORECASE | re.DOTALL)


def ascii_html(source: str) -> str:
    """Non-ASCII characters as numeric character references (``’`` → ``&#8217;``): the same
    text to every HTML parser, and a part that needs no transfer encoding. Not inside
    <style>/<script> (raw text, where references are not decoded) nor inside phase-2 tags (a
    string literal there is autoescaped later)."""
    if source.isascii():
        return source
    out, start = [], 0
    for match in _KEEP_AS_WRITTEN.finditer(source):
        out += [source[start : match.start()].encode("ascii", "xmlcharrefreplace").decode("ascii"), match.group(0)]
        start = match.end()
    out.append(source[start:].encode("ascii", "xmlcharrefreplace").decode("ascii"))
    return "".join(out)


def wrap_long_lines(source: str, width: int | None = None) -> str:
    """Break lines longer than `width` where a line break changes nothing (see above).

    MJML writes the whole body as one ~15 KB line. SMTP allows 998 octets per line (RFC 5321
    §4.5.3.1.6), so as it stands the HTML part must be quoted-printable, and encoding 17 KB
    of it costs ~100 µs per email. Wrapped (with room left for the URLs phase 2 inserts), the
    part can go as plain 7bit (see :func:`cadence.core.message.build_mime`). A line with no
    such place stays long, and that email's HTML is then quoted-printable as before.
    """
    width = width or WRAP_WIDTH
    out: list[str] = []
    for line in source.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        # (where the next line starts, where this one ends): a replaced space, or an insertion
        breaks = [(m.start() + 1, m.start()) for m in _ATTRIBUTE_GAP.finditer(line)]
        breaks += [(m.end(), m.end()) for m in _AFTER_BLOCK.finditer(line) if m.end() < len(line)]
        breaks.sort()
        start, previous = 0, (0, 0)
        for cut in breaks:
            if cut[1] - start > width and previous[0] > start:
                out.append(line[start : previous[1]])
                start = previous[0]
            previous = cut
        if len(line) - start > width and previous[0] > start:
            out.append(line[start : previous[1]])
            start = previous[0]
        out.append(line[start:])
    return "\n".join(out)


def with_utm(url: str, utm: dict[str, str], own_host: str | None) -> str:
    """`url` with the `utm` parameters appended if it points at `own_host` (never overriding)."""
    if not utm or not own_host:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host.removeprefix("www.") != own_host.removeprefix("www.") or _NO_UTM_PATH.search(parts.path):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, v) for k, v in utm.items() if k not in present]
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def _rewrite_links(compiled_html: str, utm: dict[str, str], own_host: str | None) -> tuple[str, str, tuple[str, ...]]:
    """(HTML with phase-2 link calls, HTML prepared for the text part, the links in order).

    In the text part each link keeps its label and gains " (url)" after it, or becomes the URL
    when the label already is one, so no link is lost in the plain-text version. Links that are
    phase-2 expressions already (``[[ links.unsubscribe ]]``) are left alone: they get no UTM
    parameters and no click tracking.
    """
    index: dict[str, int] = {}
    html_parts: list[str] = []
    text_parts: list[str] = []
    last = 0
    for m in _ANCHOR.finditer(compiled_html):
        before, quote, raw, after, label = m.groups()
        href = html.unescape(raw).strip()
        html_parts.append(compiled_html[last : m.start()])
        text_parts.append(compiled_html[last : m.start()])
        last = m.end()
        shown = " ".join(html.unescape(_TAGS.sub("", label)).split()).rstrip("/").lower()
        if href.lower().startswith(("http://", "https://")):
            position = index.setdefault(with_utm(href, utm, own_host), len(index))
            target = f"[[ {LINKS_VARIABLE}[{position}] ]]"
            html_parts.append(f"<a{before}href={quote}{target}{quote}{after}>{label}</a>")
            bare = href.rstrip("/").lower()
            same = shown in (bare, bare.split("://", 1)[1])
            text_parts.append(f"<a>{target}</a>" if same else f"<a>{label}</a> ({target})")
            continue
        html_parts.append(m.group(0))
        target = href[len("mailto:") :].split("?", 1)[0] if href.lower().startswith("mailto:") else href
        show_target = target and not href.startswith("#") and shown != target.lower()
        text_parts.append(f"<a>{label}</a> ({target})" if show_target else f"<a>{label}</a>")
    html_parts.append(compiled_html[last:])
    text_parts.append(compiled_html[last:])
    return "".join(html_parts), "".join(text_parts), tuple(index)


# Typography with a plain ASCII spelling, for the text part: without them a text part is usually
# pure ASCII and goes 7bit, not quoted-printable (~35 µs less per email in build_mime), and it
# reads the same in every mail client's plain-text view. Letters (é in a name) stay as they are.
_ASCII_TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"',
        "\u2013": "-", "\u2014": "--", "\u2026": "...", "\u00a0": " ", "\u202f": " ", "\u2009": " ",
        "\u00b7": "-", "\u2022": "*", "\u2192": "->",
    }
)  # fmt: skip


_LIST_ITEM = re.compile(r"^\s+(?:\*|\d+\.)\s")


def _tidy_text(text: str) -> str:
    lines: list[str] = []
    for line in text.translate(_ASCII_TYPOGRAPHY).splitlines():
        line = line.rstrip()
        # A list that ends where the next section's heading begins (a new mj-text) gets no
        # margin from inscriptis: the heading would read as one more item (issue 11).
        if line and lines and _LIST_ITEM.match(lines[-1]) and not line[0].isspace():
            lines.append("")
        lines.append(line)
    tidy = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return tidy + "\n"


_POSITION = re.compile(r"at position (\d+):(\d+)")
_MJML_TAG = re.compile(r"<(/?)([a-zA-Z][\w:-]*)[^<>]*?(/?)>|<(?![a-zA-Z/!])")
_VOID = frozenset(["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"])


def mjml_error_line(mjml: str, sources: tuple[tuple[str, str], ...], message: str = "") -> tuple[str, int] | None:
    """Best guess at the source line behind an MJML parse error.

    mrml reports a byte span ("at position 16:25") for some errors and nothing for others. For
    the others we walk the phase-1 output keeping a stack of open tags; the first stray ``<`` or
    mismatched closing tag is the likely culprit. That line of output is then looked up in the
    sources (phase 1 copies template lines through unchanged unless they hold ``{{ }}`` values).
    """
    position = _POSITION.search(message)
    if position:
        offset = len(mjml.encode()[: int(position.group(1))].decode(errors="ignore"))
        return _source_line(mjml.count("\n", 0, offset), mjml, sources)
    stack: list[tuple[str, int]] = []
    culprit = None
    for m in _MJML_TAG.finditer(mjml):
        line = mjml.count("\n", 0, m.start())
        if m.group(2) is None:  # a bare "<"
            culprit = line
            break
        closing, tag, selfclosing = m.group(1), m.group(2).lower(), m.group(3)
        if selfclosing or tag in _VOID:
            continue
        if not closing:
            stack.append((tag, line))
        elif stack and stack[-1][0] == tag:
            stack.pop()
        else:
            culprit = stack[-1][1] if stack else line
            break
    else:
        culprit = stack[-1][1] if stack else None
    return None if culprit is None else _source_line(culprit, mjml, sources)


def _source_line(index: int, mjml: str, sources: tuple[tuple[str, str], ...]) -> tuple[str, int] | None:
    lines = mjml.splitlines()
    wanted = lines[index].strip() if index < len(lines) else ""
    for name, source in sources:  # the entry template first: that is where edits usually are
        for number, text in enumerate(source.splitlines(), 1):
            if wanted and text.strip() == wanted:
                return name, number
    return None
