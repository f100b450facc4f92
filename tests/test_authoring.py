"""Staff tools: the validator (one fixture per problem), the preview, the timeline, the CLI."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pytest
import typer
from typer.testing import CliRunner

from cadence.cli.authoring import register
from cadence.core.campaign import Campaign, Segment, Step, Tracking
from cadence.core.render import Renderer
from cadence.files.campaigns import load_campaign
from cadence.review.previews import Problem, simulate_timeline, validate_campaign, write_preview

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "templates"
DEMO_SOURCE = "tests/fixtures/demo.yaml"


@pytest.fixture(scope="module")
def campaign() -> Campaign:
    return load_campaign(REPO / "campaigns" / "lower-back-pain.yaml")


def demo_campaign(context: dict[str, Any] | None = None) -> Campaign:
    clinic = {"name": "Demo Clinic", "postal_address": "1 Main St, Springfield", "website": "https://clinic.example"}
    return Campaign(
        id="demo",
        name="Demo course",
        sender_name="Demo Clinic",
        sender_email="care@clinic.example",
        timezone="UTC",
        segments=(Segment("all", "Everyone", fallback=True),),
        steps=(Step("one", "demo/01.mjml", timedelta()),),
        context=context if context is not None else {"clinic": clinic},
        tracking=Tracking(utm={"utm_source": "cadence"}),
        source=DEMO_SOURCE,
    )


def fixture_renderer(problem: str) -> Renderer:
    """The problem's own files first, then the clean base layout and step."""
    loaders = [jinja2.FileSystemLoader(str(FIXTURES / problem)), jinja2.FileSystemLoader(str(FIXTURES / "_base"))]
    return Renderer(jinja2.ChoiceLoader(loaders))


def test_the_real_campaign_validates_clean(campaign: Campaign) -> None:
    renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
    assert validate_campaign(campaign, renderer) == []


def test_the_clean_fixture_validates_clean() -> None:
    assert validate_campaign(demo_campaign(), fixture_renderer("_base")) == []


# (fixture, line in demo/01.mjml or None where the problem is an absence, words in the message)
CASES = [
    ("undefined_phase1", 6, "undefined variable: 'dict object' has no attribute 'fax'"),
    ("undefined_phase2", 6, "undefined variable: 'dict object' has no attribute 'nickname'"),
    ("jinja_syntax", 8, "Jinja syntax error"),
    ("phase2_syntax", 7, "Jinja syntax error (phase 2)"),
    ("sandbox_escape", 6, "refused by the template sandbox"),
    ("mjml_error", 7, "MJML error"),
    ("missing_preheader", 4, "no preheader"),
    ("empty_subject", 3, "the subject is empty"),
    ("long_subject", 4, "the subject is 78 characters, over 70"),
    ("image_without_alt", 6, "<mj-image> has no alt text"),
    ("http_link", 6, "insecure link 'http://clinic.example/old'"),
    ("javascript_link", 7, "javascript: link"),
    ("mailto_button", 7, "a mailto: link as the button"),
    ("unknown_tag", 6, "unknown MJML tag <mj-txt>"),
    ("unescaped_name", 6, "printed unescaped"),
    ("missing_unsubscribe", None, "no unsubscribe link"),
    ("missing_postal_address", None, "the postal address '1 Main St, Springfield' is not in the email"),
    ("html_too_big", None, "Gmail clips messages over 102 KB"),
]


@pytest.mark.parametrize(("fixture", "line", "words"), CASES, ids=[c[0] for c in CASES])
def test_the_validator_reports_each_problem_with_file_and_line(fixture: str, line: int | None, words: str) -> None:
    problems = validate_campaign(demo_campaign(), fixture_renderer(fixture))
    assert len(problems) == 1, "\n".join(map(str, problems))
    problem = problems[0]
    assert (problem.file, problem.line) == ("demo/01.mjml", line)
    assert words in problem.message
    assert (problem.step_id, problem.segment_id) == ("one", "all")
    where = f"demo/01.mjml:{line}: " if line else "demo/01.mjml: "
    assert str(problem).startswith(where)


def test_a_campaign_without_a_postal_address_is_reported_against_the_campaign_file() -> None:
    context = {"clinic": {"name": "Demo Clinic", "website": "https://clinic.example"}}
    problems = validate_campaign(demo_campaign(context), fixture_renderer("_base"))
    assert (problems[0].file, problems[0].line) == (DEMO_SOURCE, None)
    assert "postal_address is missing" in problems[0].message
    # ... and the layout that prints it cannot render.
    assert [(p.file, p.line) for p in problems[1:]] == [("_shared/layout.mjml", 21)]
    assert "postal_address" in problems[1].message


def test_problems_in_a_shared_file_are_reported_once() -> None:
    two_steps = demo_campaign()
    steps = (two_steps.steps[0], Step("two", "demo/01.mjml", timedelta(days=1)))
    campaign = Campaign(**{**_fields(two_steps), "steps": steps})
    problems = validate_campaign(campaign, fixture_renderer("unknown_tag"))
    assert len(problems) == 1


def _fields(campaign: Campaign) -> dict[str, Any]:
    return {name: getattr(campaign, name) for name in Campaign.__dataclass_fields__}


def test_the_preview_is_a_grid_of_every_step_and_segment_at_two_widths(campaign: Campaign, tmp_path: Path) -> None:
    renderer = Renderer(jinja2.FileSystemLoader(str(REPO / "templates")))
    index = write_preview(campaign, renderer, tmp_path)
    assert index == tmp_path / "index.html"
    pages = sorted(p.name for p in tmp_path.glob("*.html") if p.name != "index.html")
    assert len(pages) == len(campaign.steps) * len(campaign.segments)
    assert "01-why-it-hurts--trail+race-soon.html" in pages
    grid = index.read_text()
    rows = re.findall(r"<tr>.*?</tr>", grid, re.DOTALL)
    assert len(rows) == 1 + len(campaign.steps)
    assert rows[0].count("<th>") == 1 + len(campaign.segments)
    for page in pages:
        assert f'<iframe src="{page}" width="375"' in grid and f'<iframe src="{page}" width="600"' in grid
    assert "Why trail miles can leave your low back sore" in grid
    assert "Back course 1/7: It is rarely the spine itself." in grid  # the preheader
    assert "Trail runners · race within 8 weeks" in grid  # a column: one combination of facets


def test_the_preview_shows_a_broken_email_as_its_error(tmp_path: Path) -> None:
    write_preview(demo_campaign(), fixture_renderer("undefined_phase1"), tmp_path)
    assert "demo/01.mjml:6: undefined variable" in (tmp_path / "index.html").read_text()


def test_the_timeline_follows_delays_the_send_window_and_the_time_zone(campaign: Campaign) -> None:
    tz = ZoneInfo("America/New_York")
    enrolled = datetime(2025, 3, 6, 15, 0, tzinfo=UTC)  # Thursday 10:00 in New York, after the window
    timeline = simulate_timeline(campaign, {"terrain": "trails"}, tz, enrolled)
    assert [e.step_id for e in timeline] == [s.id for s in campaign.steps]
    assert {e.segment_id for e in timeline} == {"trail+no-race"}
    local = [e.send_at_local for e in timeline]
    assert local[0] == datetime(2025, 3, 7, 7, 0, tzinfo=tz)  # next morning's window
    assert local[1] == datetime(2025, 3, 10, 7, 0, tzinfo=tz)  # +2 days is Sunday: no sends, so Monday
    for entry in timeline:
        assert entry.send_at_utc.tzinfo is not None and entry.send_at_utc == entry.send_at_local
        assert 7 <= entry.send_at_local.hour < 9 and entry.send_at_local.weekday() != 6
    assert timeline[2].send_at_utc.utcoffset() == timedelta(0)
    assert local[2].utcoffset() == timedelta(hours=-4), "daylight saving time began on 9 March"
    race = simulate_timeline(campaign, {"training_for_race": "yes"}, tz, enrolled)
    assert {e.segment_id for e in race} == {"everyday+race"}
    # The race month is read on each send date: the runner moves to "race soon" as it nears.
    may = simulate_timeline(campaign, {"training_for_race": "yes", "race_month": "2025-05-10"}, tz, enrolled)
    assert [e.segment_id for e in may][:2] == ["everyday+race", "everyday+race"]
    assert [e.segment_id for e in may][-2:] == ["everyday+race-soon", "everyday+race-soon"]


# --- CLI -----------------------------------------------------------------------------------


def cli() -> typer.Typer:
    app = typer.Typer()
    campaigns = typer.Typer()
    register(campaigns)
    app.add_typer(campaigns, name="campaigns")
    return app


def test_cli_validate_lists_subjects_when_the_campaign_is_clean() -> None:
    dirs = ["--campaigns-dir", str(REPO / "campaigns"), "--templates-dir", str(REPO / "templates")]
    result = CliRunner().invoke(cli(), ["campaigns", "validate", "lower-back-pain", *dirs], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Why trail miles can leave your low back sore" in result.output
    assert "Road, path and treadmill runners · no race planned" in result.output


def test_cli_validate_exits_1_listing_file_line_and_message(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    step = templates / "lower-back-pain" / "03-adjust-the-load.mjml"
    source = step.read_text()
    # Only runners training for a race far off see the broken line.
    step.write_text(source.replace("<p>You have room", "<p>{{ clinic.fax }} You have room", 1))
    line = source[: source.index("<p>You have room")].count("\n") + 1
    args = [
        "campaigns",
        "validate",
        str(REPO / "campaigns" / "lower-back-pain.yaml"),
        "--templates-dir",
        str(templates),
    ]
    result = CliRunner().invoke(cli(), args, env={"COLUMNS": "300"})
    assert result.exit_code == 1
    shown = str(templates / "lower-back-pain/03-adjust-the-load.mjml")
    assert f"{shown}:{line}: undefined variable: 'dict object' has no attribute 'fax'" in result.output
    assert "[adjust-the-load/trail+race]" in result.output
    assert "1 problem(s)" in result.output


def test_cli_simulate_prints_the_timeline_for_given_attributes() -> None:
    args = [
        "campaigns",
        "simulate",
        "lower-back-pain",
        "--attr",
        "terrain=trails",
        "--tz",
        "Europe/Paris",
        "--start",
        "2025-03-07T10:00",
        "--campaigns-dir",
        str(REPO / "campaigns"),
    ]
    result = CliRunner().invoke(cli(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Sat 2025-03-08 07:00 CET" in result.output and "when-to-get-help" in result.output
    bad = CliRunner().invoke(cli(), [*args[:6], "Mars/Olympus", *args[7:]])
    assert bad.exit_code == 1 and "'Mars/Olympus' is not an IANA time zone" in bad.output
    neither = CliRunner().invoke(cli(), ["campaigns", "simulate", "lower-back-pain"])
    assert neither.exit_code == 2 and "give either --email E or one or more --attr" in neither.output


def test_cli_preview_writes_the_grid(tmp_path: Path) -> None:
    args = [
        "campaigns",
        "preview",
        "lower-back-pain",
        "--out",
        str(tmp_path),
        "--campaigns-dir",
        str(REPO / "campaigns"),
        "--templates-dir",
        str(REPO / "templates"),
    ]
    result = CliRunner().invoke(cli(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "index.html").is_file() and (tmp_path / "07-when-to-get-help--everyday+no-race.html").is_file()


def test_problem_prints_as_file_line_message() -> None:
    assert str(Problem("a.mjml", 3, "oops", "s", "g")) == "a.mjml:3: oops [s/g]"
    assert str(Problem("c.yaml", None, "missing")) == "c.yaml: missing"
