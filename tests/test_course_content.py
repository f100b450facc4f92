"""The lower-back-pain course as each runner receives it (issue 11): composed from terrain and race
facets, the load advice following the weeks to the race, the safety net in the right places,
buttons that go where they say, shared lessons that reach everyone, and a bounded number of
compiled variants."""

from __future__ import annotations

import html
import itertools
import re
from datetime import date
from typing import Any

import jinja2
import pytest

from cadence.core.campaign import Campaign
from cadence.core.render import RenderedEmail, Renderer, render_email
from cadence.core.segments import choose_segment, date_span
from cadence.errors import CampaignError
from tests.support.course import JORDAN, LINKS, REPO, course_campaign, course_renderer

LESSONS = 7


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return course_campaign()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return course_renderer()


@pytest.fixture(scope="module")
def emails(campaign: Campaign, renderer: Renderer) -> dict[tuple[int, str], RenderedEmail]:
    """Every (step number, segment id) as Jordan receives it."""
    return {
        (number, segment.id): render_email(renderer.variant(campaign, step, segment), subscriber=JORDAN, links=LINKS)
        for number, step in enumerate(campaign.steps, 1)
        for segment in campaign.segments
    }


def lines(email: RenderedEmail) -> set[str]:
    return {line.strip() for line in email.text.splitlines() if line.strip()}


def runs(email: RenderedEmail, n: int = 6) -> set[tuple[str, ...]]:
    words = email.text.split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def segment_for(campaign: Campaign, attributes: dict[str, str], today: date) -> str:
    return choose_segment(campaign.segments, attributes, today).id


# --- who gets which variant --------------------------------------------------------------------


def test_terrain_and_race_both_count_and_the_race_month_is_read_on_the_send_date(campaign: Campaign) -> None:
    trail_racer = {"terrain": "trails", "training_for_race": "yes", "race_month": "2027-05"}
    assert segment_for(campaign, trail_racer, date(2027, 1, 10)) == "trail+race"
    # Eight weeks before the race month begins, the same runner is "race soon".
    assert segment_for(campaign, trail_racer, date(2027, 3, 6)) == "trail+race-soon"
    assert segment_for(campaign, trail_racer, date(2027, 5, 31)) == "trail+race-soon"
    assert segment_for(campaign, trail_racer, date(2027, 6, 1)) == "trail+race"  # the race is behind them
    assert segment_for(campaign, {"terrain": "roads", "training_for_race": "yes"}, date(2027, 3, 6)) == "everyday+race"
    assert segment_for(campaign, {"terrain": "treadmill", "race_month": "2027-04"}, date(2027, 3, 6)) == (
        "everyday+no-race"  # a month without "training for a race" is not a race
    )
    assert segment_for(campaign, {}, date(2027, 3, 6)) == "everyday+no-race"
    junk = {"terrain": "trails", "training_for_race": "yes", "race_month": "may"}
    assert segment_for(campaign, junk, date(2027, 3, 6)) == "trail+race"


def test_a_date_rule_without_the_send_date_is_an_error_not_a_guess(campaign: Campaign) -> None:
    with pytest.raises(CampaignError, match="race_month within_weeks needs today's date"):
        choose_segment(campaign.segments, {"training_for_race": "yes", "race_month": "2027-05"})
    assert date_span("2027-02") == (date(2027, 2, 1), date(2027, 2, 28))
    assert date_span("2027-12-31") == (date(2027, 12, 31), date(2027, 12, 31))
    assert date_span("2027-13") is None and date_span("soon") is None and date_span(None) is None


def test_a_trail_runner_training_for_a_race_gets_both_the_trail_and_the_race_passages(
    emails: dict[tuple[int, str], RenderedEmail],
) -> None:
    for number in range(1, LESSONS + 1):
        trail_only = runs(emails[(number, "trail+no-race")]) - runs(emails[(number, "everyday+no-race")])
        race_only = runs(emails[(number, "everyday+race")]) - runs(emails[(number, "everyday+no-race")])
        assert trail_only, f"lesson {number} has nothing of its own for trail runners"
        assert race_only, f"lesson {number} has nothing of its own for race trainees"
        both = runs(emails[(number, "trail+race")])
        # Passages joined inside a sentence change the few word runs that cross the join.
        assert len(trail_only & both) >= 0.8 * len(trail_only), f"lesson {number}: trail passage missing"
        assert len(race_only & both) >= 0.8 * len(race_only), f"lesson {number}: race passage missing"


def test_the_weeks_to_the_race_change_the_load_advice(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    soon, later, none = (emails[(3, f"everyday+{race}")].text for race in ("race-soon", "race", "no-race"))
    assert "With your race less than two months away" in soon and "not the time to build" in soon
    assert "With time before race day" in later and "proper down week" in later
    assert "not the time to build" not in later and "proper down week" not in soon
    assert "race" not in none.split("Hi Jordan,")[1].split("Please note")[0].lower()


def test_the_close_and_the_check_in_are_specific_to_the_runner(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    closes = {segment: emails[(7, segment)] for segment in ("trail+race-soon", "everyday+race", "everyday+no-race")}
    assert len({e.text for e in closes.values()}) == 3
    assert (
        "descent" in closes["trail+race-soon"].text
        and "Book a first visit before race day" in closes["trail+race-soon"].text
    )
    assert "training plan" in closes["everyday+race"].text
    assert "training plan" not in closes["everyday+no-race"].text


# --- safety ------------------------------------------------------------------------------------


def test_lesson_one_shows_the_warning_signs_in_two_tiers_in_its_body(
    emails: dict[tuple[int, str], RenderedEmail],
) -> None:
    for (number, segment), email in emails.items():
        if number != 1:
            continue
        body = email.text.split("Hi Jordan,")[1].split("Please note:")[0]
        today, soon = body.index("Get medical help today"), body.index("See a doctor within a few days")
        assert today < soon
        assert "bladder or bowels" in body[today:soon] and "numbness between your legs" in body[today:soon]
        assert "wakes you at night" in body[soon:] and "runs down a leg" in body[soon:], segment


def test_lessons_that_could_stir_symptoms_link_to_the_warning_signs(
    campaign: Campaign, emails: dict[tuple[int, str], RenderedEmail]
) -> None:
    page = campaign.context["guide"]["warning_signs"]
    for (number, segment), email in emails.items():
        assert "Get medical help today" in email.text  # every disclaimer is tiered
        if number in (2, 3, 7, 8):
            assert page in email.text, f"email {number}/{segment} does not link the warning signs"
    for segment in (s.id for s in campaign.segments):
        assert "refer you to a physician" in emails[(7, segment)].text
        assert "keep running while we work" not in emails[(7, segment)].text


def test_the_amber_zone_agrees_with_the_signs_to_get_help(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    text = emails[(3, "everyday+no-race")].text
    amber = next(line for line in text.splitlines() if "Amber:" in line)
    red = next(line for line in text.splitlines() if "Red:" in line)
    assert "builds" not in amber and "builds as you run" in red
    assert "builds while you run" in emails[(7, "everyday+no-race")].text


# --- craft -------------------------------------------------------------------------------------


def test_shared_lessons_reach_every_runner(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    for (number, segment), email in emails.items():
        expected = {
            1: "most running-related back pain settles",
            2: "First, a two-minute hip check",
            4: "Change one thing at a time",
            6: "Training through it and hoping",
        }.get(number)
        assert expected is None or expected in email.text, f"{number}/{segment} lacks {expected!r}"


def test_four_mistakes_means_four(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    for (number, segment), email in emails.items():
        if number == 6:
            section = email.text.split("The four")[1].split("How they show up")[0]
            assert len(re.findall(r"^\s+\d+\. ", section, re.MULTILINE)) == 4, segment


def test_advice_is_season_neutral_and_assumes_no_desk_job(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    for (number, segment), email in emails.items():
        text = email.text.lower()
        assert not re.search(r"\b(summer|winter|spring|autumn|december|november)\b", text), (number, segment)
        assert "desk" not in text, (number, segment)


def test_progress_shows_in_the_preheader_and_header(
    campaign: Campaign, renderer: Renderer, emails: dict[tuple[int, str], RenderedEmail]
) -> None:
    for number, step in enumerate(campaign.steps, 1):
        for segment in campaign.segments:
            preheader = renderer.variant(campaign, step, segment).preheader_source
            assert 40 <= len(preheader) <= 110, preheader
            text = emails[(number, segment.id)].text
            if number <= LESSONS:
                assert preheader.startswith(f"Back course {number}/{LESSONS}: ")
                assert f"lesson {number} of {LESSONS}" in text
            else:
                assert preheader.startswith("Back course check-in: ") and "a check-in after the course" in text


_BUTTON = re.compile(r'<mj-button href="([^"]+)"[^>]*>([^<]+)</mj-button>')


def test_every_button_goes_where_its_label_says_or_the_email_asks_for_a_reply(
    campaign: Campaign, renderer: Renderer
) -> None:
    guide, clinic = campaign.context["guide"], campaign.context["clinic"]
    destinations = {
        "hip routine": guide["hip_routine"],
        "running form": guide["running_form"],
        "recovery": guide["recovery"],
        "book a first visit": clinic["booking_url"],
    }
    pages: set[str] = set()
    for step in campaign.steps:
        for segment in campaign.segments:
            mjml = renderer.variant(campaign, step, segment).mjml
            buttons = _BUTTON.findall(mjml)
            if not buttons:
                assert "Reply" in mjml, f"{step.id}: neither a button nor a reply prompt"
                continue
            ((url, label),) = buttons
            wanted = [u for words, u in destinations.items() if words in html.unescape(label).lower()]
            assert wanted == [html.unescape(url)], f"{step.id}/{segment.id}: {label!r} links to {url}"
            pages.add(url)
    assert len(pages) == 4


def test_the_booking_ask_says_what_a_first_visit_is(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    for (number, segment), email in emails.items():
        if number in (7, 8):
            assert "about an hour with" in email.text and "licensed massage therapist" in email.text, segment


def test_each_lesson_is_about_350_words(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    for (number, segment), email in emails.items():
        body = email.text.split("Hi Jordan,")[1].split("Please note:")[0]
        assert 120 <= len(body.split()) <= 400, f"{number}/{segment}: {len(body.split())} words"


def test_the_plain_text_keeps_a_blank_line_between_a_list_and_the_next_heading(
    emails: dict[tuple[int, str], RenderedEmail],
) -> None:
    for email in emails.values():
        rows = email.text.splitlines()
        for above, below in itertools.pairwise(rows):
            if re.match(r"^\s+(\*|\d+\.) ", above):
                assert below == "" or below.startswith(" "), f"{above!r} runs into {below!r}"


def test_the_variants_compiled_stay_few_and_each_is_compiled_once(campaign: Campaign) -> None:
    loads: list[str] = []

    class CountingLoader(jinja2.FileSystemLoader):
        def get_source(self, environment: jinja2.Environment, template: str) -> Any:
            loads.append(template)
            return super().get_source(environment, template)

    renderer = Renderer(CountingLoader(str(REPO / "templates")))
    people = [
        {"terrain": terrain, "training_for_race": race, "race_month": month}
        for terrain in ("trails", "roads", "treadmill", "mixed")
        for race in ("yes", "no")
        for month in ("", "2027-04", "2027-12")
    ]
    variants = {
        id(renderer.variant(campaign, step, choose_segment(campaign.segments, person, date(2027, 3, 1))))
        for _ in range(3)
        for person in people
        for step in campaign.steps
    }
    assert len(campaign.segments) == 6
    assert len(variants) == 6 * len(campaign.steps)  # every combination, each compiled once
    entry_loads = [t for t in loads if t.startswith("lower-back-pain/0")]
    assert len(entry_loads) == len(variants)


def _syllables(word: str) -> int:
    """Vowel groups, less a silent final e: the usual estimate for Flesch-Kincaid."""
    word = word.lower()
    count = len(re.findall(r"[aeiouy]+", word))
    if word.endswith("e") and not word.endswith(("le", "ee")) and count > 1:
        count -= 1
    return max(1, count)


def flesch_kincaid_grade(text: str) -> float:
    """US school grade; sentences end at . ! ? : ; and every list item or paragraph is one."""
    sentences = [s for s in re.split(r"[.!?:;]+\s|\n\s*\n|\n\s+[*\d]", text) if re.search(r"[A-Za-z]", s)]
    words = re.findall(r"[A-Za-z][A-Za-z']*", text)
    syllables = sum(_syllables(w) for w in words)
    return 0.39 * len(words) / len(sentences) + 11.8 * syllables / len(words) - 15.59


def test_every_email_reads_at_grade_eight_or_below(emails: dict[tuple[int, str], RenderedEmail]) -> None:
    assert flesch_kincaid_grade("The cat sat on the mat. It was happy.") < 2
    for (number, segment), email in emails.items():
        body = re.sub(r"\(https?://[^)]+\)", "", email.text.split("Hi Jordan,")[1].split("Please note:")[0])
        assert flesch_kincaid_grade(body) <= 8, (number, segment, round(flesch_kincaid_grade(body), 1))
