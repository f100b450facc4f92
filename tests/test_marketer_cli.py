"""What a marketer trying Cadence with only --help and the README tripped over (issue 13),
through the installed command: status shows people enrolled but not yet sent to, fits an
80-column terminal with six composed segments, enroll takes segment names, tick speaks plainly,
help shows no Python types and no sentences broken mid-line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.cluster import cadence_env
from tests.test_cli import cadence, one_error_line

CAMPAIGN = "lower-back-pain"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Four runners in two segments, enrolled by segment *name*; the clock before step 1 is due."""
    tmp = tmp_path_factory.mktemp("marketer")
    (tmp / "clock").write_text("2026-12-07T04:00:00+00:00")  # 23:00 in New York: outside the window
    env = cadence_env(tmp / "data", CADENCE_CLOCK=f"file:{tmp / 'clock'}", COLUMNS="80")
    assert cadence(env, "db", "upgrade").status == 0
    for i, terrain in enumerate(["trails", "trails", "roads", "roads"]):
        added = cadence(env, "subscribers", "add", f"r{i}@example.com", "--tz", "America/New_York",
                        "--attr", f"terrain={terrain}")  # fmt: skip
        assert added.status == 0, added
    enrolled = cadence(env, "campaigns", "enroll", CAMPAIGN, "--segment", "trail runners · no race planned")
    assert enrolled.status == 0 and "2 enrolled" in enrolled.out, enrolled
    by_id = cadence(env, "campaigns", "enroll", CAMPAIGN, "--segment", "everyday+no-race")
    assert by_id.status == 0 and "2 enrolled" in by_id.out, by_id
    return env


def test_status_shows_people_enrolled_but_not_yet_sent_to(env: dict[str, str]) -> None:
    document = json.loads(cadence(env, "campaigns", "status", CAMPAIGN, "--json").out)
    assert document["people"] == {
        "enrolled": 4, "active": 4, "waiting": 4, "next_send_at": "2026-12-07T12:00:00+00:00",
        "postponed": 0, "postponed_until": None,
    }  # fmt: skip
    first = document["steps"][0]
    assert (first["waiting"], first["next_send_at"], first["totals"]["sent"]) == (4, "2026-12-07T12:00:00+00:00", 0)
    assert document["state"] == "running" and document["held"] is None
    table = cadence(env, "campaigns", "status", CAMPAIGN)
    assert table.status == 0
    flat = " ".join(table.out.split())
    assert "4 enrolled, 4 still in the series, 4 waiting for their next email (next: Mon 7 Dec 12:00 UTC)" in flat
    row = next(line for line in table.out.splitlines() if "1. why-it-hurts" in line)
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["4", "0"]  # waiting, due


def test_status_fits_80_columns_with_six_composed_segments(env: dict[str, str], tmp_path: Path) -> None:
    (Path(env["CADENCE_CLOCK"].removeprefix("file:"))).write_text("2026-12-07T12:30:00+00:00")  # step 1 due
    ran = cadence(env, "campaigns", "status", CAMPAIGN)
    assert ran.status == 0
    assert max(len(line) for line in ran.out.splitlines()) <= 80, ran.out
    for segment in ("trail+no-race", "everyday+no-race"):  # segments by id, one row each
        assert re.search(rf"│ {re.escape(segment)}\s+│ 1\. why-it-hurts\s+│\s+2 │", ran.out), ran.out
    assert "…" not in ran.out  # nothing cut off


def test_enroll_with_an_unknown_segment_lists_the_valid_ones(env: dict[str, str]) -> None:
    ran = cadence(env, "campaigns", "enroll", CAMPAIGN, "--segment", "trail")
    assert ran.status == 1
    line = one_error_line(ran)
    assert "no segment 'trail'" in line and "trail+no-race (Trail runners · no race planned)" in line


def test_tick_says_what_it_did_in_plain_words(env: dict[str, str]) -> None:
    (Path(env["CADENCE_CLOCK"].removeprefix("file:"))).write_text("2026-12-07T12:30:00+00:00")
    ran = cadence(env, "tick")
    assert ran.status == 0, ran
    said = " ".join(ran.out.split())
    assert said == "4 email(s) handed to the workers to send now (1 batch); 4 of them came due since the last run."
    again = cadence(env, "tick")
    assert again.out.strip() == "Nothing is due right now."
    assert "claimed" not in ran.out + again.out and "deliveries" not in ran.out + again.out


@pytest.mark.parametrize("args", [[], ["campaigns", "enroll"], ["campaigns", "cancel"]])
def test_help_shows_no_python_types_and_no_sentence_broken_mid_line(args: list[str]) -> None:
    ran = cadence(cadence_env(Path("/nonexistent"), COLUMNS="100"), *args, "--help")
    assert ran.status == 0
    for python_type in ("<bool>", "<str>", "<list[str]>", "<float>", "<int>"):
        assert python_type not in ran.out, ran.out
    if not args:
        # The scheduler's docstring breaks its lines in the source ("keep it / running"): reflowed.
        assert "running; a second one" in " ".join(ran.out.split()).replace("│", "").replace("  ", " ")
        lines = [line.strip("│ ") for line in ran.out.splitlines()]
        assert not any(line.endswith(" a") for line in lines), ran.out
