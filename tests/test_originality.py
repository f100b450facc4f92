"""The emails are written in our own words: no run of 8+ words is copied from the source article.

The article lives outside the repository (``../shared/source-article.txt``). Without it the test
skips, except under CI=true where it fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from cadence.core.render import Renderer, render_email
from cadence.files.campaigns import load_campaign
from cadence.review.previews import SAMPLE_LINKS
from tests.support.services import unavailable

REPO = Path(__file__).resolve().parents[1]
ARTICLE = Path(__file__).resolve().parents[2] / "shared" / "source-article.txt"
RUN = 8
# Curly quotes become straight ones; dashes separate words (so "fine—really" is two words).
_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2032": "'", "\u2014": " ", "\u2013": " "}
)


def words(text: str) -> list[str]:
    """Lowercased words, curly quotes made straight, punctuation dropped (you’re == youre)."""
    plain = re.sub(r"[^\w\s]", "", text.translate(_QUOTES).lower())
    return plain.split()


def runs(text: str, n: int = RUN) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def test_words_are_normalised_before_comparing() -> None:
    assert words("You’re “Fine”—really, it's OK.") == ["youre", "fine", "really", "its", "ok"]
    assert runs("one two three four five six seven eight nine") == {
        ("one", "two", "three", "four", "five", "six", "seven", "eight"),
        ("two", "three", "four", "five", "six", "seven", "eight", "nine"),
    }


def test_no_email_shares_eight_consecutive_words_with_the_source_article() -> None:
    if not ARTICLE.is_file():
        unavailable(f"the source article {ARTICLE}", "it lives in ../shared/ next to the repository")
    article = runs(ARTICLE.read_text(encoding="utf-8"))
    campaign = load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")
    renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
    subscriber = {"first_name": "Jordan", "email": "jordan@example.com", "attributes": {}}
    copied: list[str] = []
    for step in campaign.steps:
        for segment in campaign.segments:
            variant = renderer.variant(campaign, step, segment)
            email = render_email(variant, subscriber=subscriber, links=SAMPLE_LINKS)
            text = "\n".join([email.subject, variant.preheader_source, email.text])
            for run in sorted(runs(text) & article):
                copied.append(f"{step.id}/{segment.id}: {' '.join(run)}")
    assert not copied, "copied from the article:\n" + "\n".join(copied)


def test_no_guide_page_shares_eight_consecutive_words_with_the_source_article() -> None:
    """The guide pages the emails link to (campaigns/<id>/guide/*.md, issue 11), title and
    description included, are held to the same rule as the emails."""
    if not ARTICLE.is_file():
        unavailable(f"the source article {ARTICLE}", "it lives in ../shared/ next to the repository")
    article = runs(ARTICLE.read_text(encoding="utf-8"))
    pages = sorted((REPO / "campaigns").glob("*/guide/*.md"))
    assert len(pages) >= 4, "the lower-back-pain guide has four pages"
    copied = [
        f"{page.relative_to(REPO)}: {' '.join(run)}"
        for page in pages
        # The Markdown source: markup characters are dropped by words() like punctuation.
        for run in sorted(runs(page.read_text(encoding="utf-8")) & article)
    ]
    assert not copied, "copied from the article:\n" + "\n".join(copied)
