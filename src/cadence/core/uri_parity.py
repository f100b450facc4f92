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

__all__ = ["WEB_VIEW_LINE", "balance_uri_count", "uri_count"]

# What rspamd extracts: every href/src of the HTML part (links, images), every URL written out
# in the text part. mailto: counts in both (an address written as text, too).
_HTML_URI = re.compile(r"""\b(?:href|src)\s*=\s*["']?\s*(?:https?:|mailto:)""", re.IGNORECASE)
_TEXT_URI = re.compile(r"\bhttps?://|\bmailto:", re.IGNORECASE)
WEB_VIEW_LINE = "View this email in your browser: {url}\n\n"


def uri_count(html: str, text: str) -> int:
    """How many URIs a receiving filter finds in the two parts together."""
    return len(_HTML_URI.findall(html)) + len(_TEXT_URI.findall(text))


def balance_uri_count(html: str, text: str, web_view_url: str, *, count: int | None = None) -> str:
    """`text`, opening with the web-view line if the parts' URIs add up to an odd number.

    `count` is :func:`uri_count` of the two parts when the caller already knows it (it is the
    same for every subscriber of a compiled variant, so the send path counts once per variant).
    """
    total = uri_count(html, text) if count is None else count
    if total % 2 == 0:
        return text
    return WEB_VIEW_LINE.format(url=web_view_url) + text
