"""The text and HTML parts of an email carry URIs in step, as receiving spam filters expect.

rspamd's ``URI_COUNT_ODD`` (+1.0, ``rules/misc.lua``) adds up the URIs of both parts of a
``multipart/alternative`` message and flags an odd total: a genuine plain-text part repeats each
link of its HTML part, so the total of a genuine message is even. Our text part does repeat
every link (``render_html._rewrite_links``), but an image's URI cannot be repeated in plain text,
and every tracked email has one: the open pixel. Without a counterpart every such email scored
+1.0 for nothing it says.

The counterpart we give the text part is one the reader can use: its opening line offers the
email as a web page (the web-view link, with the images the text cannot show). It is added only
when the count is odd, so an HTML part with an even number of images gets nothing extra.
"""

from __future__ import annotations

import re

__all__ = ["WEB_VIEW_LINE", "balance_uri_count", "uri_count", "variant_uri_count"]

# What rspamd extracts: every href/src of the HTML part (links, images), every URL written out
# in the text part. mailto: counts in both (an address written as text, too). Case-insensitive,
# with a word boundary before the attribute or scheme name: the reference forms are
#   \b(?:href|src)\s*=\s*["']?\s*(?:https?:|mailto:)   (HTML, re.IGNORECASE)
#   \bhttps?://|\bmailto:                              (text, re.IGNORECASE)
# Written that way, Python's regex engine tries the alternation at every character: ~0.5-1 ms
# for a 17 KB newsletter, once per email (issue 15). The patterns below match the same thing in
# the lower-cased text, each led by a literal (which the engine finds with a fast scan) and the
# word boundary checked behind it: ~15x faster (tests/test_uri_parity.py compares both forms).
_VALUE = r"""\s*=\s*["']?\s*(?:https?:|mailto:)"""
_HTML_URIS = (re.compile(r"href(?<!\whref)" + _VALUE), re.compile(r"src(?<!\wsrc)" + _VALUE))
_TEXT_URIS = (re.compile(r"http(?<!\whttp)s?://"), re.compile(r"mailto(?<!\wmailto):"))
WEB_VIEW_LINE = "View this email in your browser: {url}\n\n"


def uri_count(html: str, text: str) -> int:
    """How many URIs a receiving filter finds in the two parts together."""
    html, text = html.lower(), text.lower()
    return sum(len(p.findall(html)) for p in _HTML_URIS) + sum(len(p.findall(text)) for p in _TEXT_URIS)


_VARIANT_COUNTS: dict[tuple[str, bool], int] = {}


def variant_uri_count(key: tuple[str, bool], html: str, text: str) -> int:
    """:func:`uri_count` of an email of a compiled variant, counted once per `key` (its content
    hash, open pixel or not): the links are the variant's, only their tracked URLs differ from
    one subscriber to the next, so the count is the same for all of them."""
    count = _VARIANT_COUNTS.get(key)
    if count is None:
        if len(_VARIANT_COUNTS) > 4096:  # templates edited in a long-running worker: old hashes
            _VARIANT_COUNTS.clear()
        count = _VARIANT_COUNTS[key] = uri_count(html, text)
    return count


def balance_uri_count(html: str, text: str, web_view_url: str, *, count: int | None = None) -> str:
    """`text`, opening with the web-view line if the parts' URIs add up to an odd number.

    `count` is :func:`uri_count` of the two parts when the caller already knows it (it is the
    same for every subscriber of a compiled variant, so the send path counts once per variant).
    """
    total = uri_count(html, text) if count is None else count
    if total % 2 == 0:
        return text
    return WEB_VIEW_LINE.format(url=web_view_url) + text
