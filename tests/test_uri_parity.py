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
