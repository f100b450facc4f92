"""The text part gets a counterpart for the HTML part's images so the URIs add up even
(rspamd's URI_COUNT_ODD); tests/test_series_as_received.py checks the real emails in rspamd."""

from __future__ import annotations

from cadence.core.uri_parity import balance_uri_count, uri_count

HTML = '<a href="https://a.example/x">A</a> <a href="mailto:b@a.example">B</a>'
TEXT = "A (https://a.example/x)\nB (mailto:b@a.example)\n"
PIXEL = '<img src="https://a.example/o/1.gif" alt="">'


def test_links_repeated_in_the_text_part_add_up_to_an_even_count() -> None:
    assert uri_count(HTML, TEXT) == 4
    assert balance_uri_count(HTML, TEXT, "https://a.example/v/1") == TEXT


def test_an_image_in_the_html_part_gets_the_web_view_as_its_counterpart_in_the_text() -> None:
    text = balance_uri_count(HTML + PIXEL, TEXT, "https://a.example/v/1")
    assert text == "View this email in your browser: https://a.example/v/1\n\n" + TEXT
    assert uri_count(HTML + PIXEL, text) % 2 == 0


def test_two_images_need_no_counterpart() -> None:
    assert balance_uri_count(HTML + PIXEL + PIXEL, TEXT, "https://a.example/v/1") == TEXT


def test_the_fast_count_finds_exactly_what_the_reference_patterns_find() -> None:
    """uri_count's literal-led patterns on lower-cased text (issue 15: ~15x faster) against the
    plain case-insensitive patterns they replace, on real emails' HTML and on random soup made
    of the pieces that matter (attribute and scheme names in any case, word characters glued
    in front, whitespace, quotes)."""
    import random
    import re
    from pathlib import Path

    reference_html = re.compile(r"""\b(?:href|src)\s*=\s*["']?\s*(?:https?:|mailto:)""", re.IGNORECASE)
    reference_text = re.compile(r"\bhttps?://|\bmailto:", re.IGNORECASE)

    def reference(html: str, text: str) -> int:
        return len(reference_html.findall(html)) + len(reference_text.findall(text))

    pieces = [
        "href", "HREF", "Href", "src", "SRC", "sRc", "data-href", "xsrc", "_src", "9href", "=", " = ", "\t=\n",
        '"', "'", " ", "\n", "http:", "https:", "HTTPS:", "http://", "https://", "Https://", "mailto:", "MailTo:",
        "ftp://", "a", "é", "<a ", "<img ", ">", "x", "://", "ahttp://", "_mailto:",
    ]  # fmt: skip
    rng = random.Random(15)
    for _ in range(3000):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert uri_count(html, text) == reference(html, text), (html, text)
    for email in Path(__file__).resolve().parents[1].glob("templates/**/*.mjml"):
        source = email.read_text(encoding="utf-8")
        assert uri_count(source, source) == reference(source, source), email
