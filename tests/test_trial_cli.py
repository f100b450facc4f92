"""A marketer's week tried cold with only README and --help (issue 13, the trial), through the
installed command at 80 columns: a Mailchimp-style import (Tags column, a newsletter topic), an
edited export imported back, which segment a person landed in, the report and the audit log
readable at 80 columns, imports and enrollments in the audit log, and the campaigns commands
pointing at the newsletters ones for a newsletter's name."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from tests.support.cluster import cadence_env
from tests.test_cli import cadence, one_error_line

CAMPAIGN = "lower-back-pain"
NEWSLETTER = "clinic-news-2027-01"
# As Mailchimp exports it: "Email Address", "TAGS" with quoted tags, a bad address, a bad zone.
CONTACTS = '''Email Address,First Name,Time zone,Terrain,TAGS
ann@example.com,Ann,America/New_York,trails,"""vip"",""Race Day"""
bob@example.com,Bob,America/Chicago,roads,
carol@example,Carol,America/Denver,trails,
dan@example.com,Dan,Mars/Olympus,roads,
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("trial")
    (tmp / "clock").write_text("2026-12-07T04:00:00+00:00")
    env = cadence_env(tmp / "data", CADENCE_CLOCK=f"file:{tmp / 'clock'}", COLUMNS="80")
    assert cadence(env, "db", "upgrade").status == 0
    (tmp / "contacts.csv").write_text(CONTACTS)
    env["TRIAL_DIR"] = str(tmp)
    return env


@pytest.fixture(scope="module")
def imported(env: dict[str, str]) -> str:
    contacts = Path(env["TRIAL_DIR"]) / "contacts.csv"
    ran = cadence(env, "subscribers", "import", str(contacts), "--skip-invalid", "--topic", "clinic-news")
    assert ran.status == 0, ran
    return ran.out


def profile(env: dict[str, str], email: str) -> dict[str, object]:
    ran = cadence(env, "subscribers", "show", email, "--json")
    assert ran.status == 0, ran
    document: dict[str, object] = json.loads(ran.out)
    return document


def test_scheduling_to_nobody_says_how_people_join_the_topic(env: dict[str, str]) -> None:
    ran = cadence(env, "newsletters", "schedule", NEWSLETTER)  # before the import: nobody is on the topic
    assert ran.status == 1
    assert "nothing scheduled" in (line := one_error_line(ran)) and "--topic clinic-news" in line
    empty = Path(env["TRIAL_DIR"]) / "no-campaigns"
    empty.mkdir()
    listed = cadence({**env, "CADENCE_CAMPAIGNS_DIR": str(empty)}, "campaigns", "list")  # a cold start
    assert listed.status == 0 and f"No campaign files in {empty}" in " ".join(listed.out.split()), listed


def test_import_reads_a_tags_column_as_tags_and_joins_the_topic(env: dict[str, str], imported: str) -> None:
    flat = " ".join(imported.split())
    assert "2 created" in flat and "2 rejected" in flat and "2 tag(s) added" in flat, imported
    assert "2 joined clinic-news" in flat, imported
    ann = profile(env, "ann@example.com")
    assert ann["tags"] == ["race-day", "vip"] and ann["topics"] == ["clinic-news"]
    assert ann["attributes"] == {"terrain": "trails"}  # no attribute named "tags"
    audience = cadence(env, "newsletters", "audience", NEWSLETTER, "--json")
    assert audience.status == 0 and json.loads(audience.out)["total"] == 2, audience


def test_an_unknown_topic_is_refused_before_anything_is_written(env: dict[str, str], imported: str) -> None:
    contacts = Path(env["TRIAL_DIR"]) / "contacts.csv"
    ran = cadence(env, "subscribers", "import", str(contacts), "--skip-invalid", "--topic", "clinic-newz")
    assert ran.status == 1
    assert "--topic: no newsletter topic 'clinic-newz' (topics: clinic-news)" in one_error_line(ran)


def test_an_edited_export_imports_back_without_bookkeeping_attributes(env: dict[str, str], imported: str) -> None:
    exported = Path(env["TRIAL_DIR"]) / "export.csv"
    assert cadence(env, "subscribers", "export", "--out", str(exported)).status == 0
    assert "race-day,vip" in exported.read_text()
    ran = cadence(env, "subscribers", "import", str(exported))
    assert ran.status == 0, ran
    assert "0 created, 0 updated, 2 unchanged" in " ".join(ran.out.split()), ran
    assert "status" not in ran.out and "created_at" not in ran.out  # no "column ... is stored" warnings
    assert profile(env, "ann@example.com")["attributes"] == {"terrain": "trails"}


def test_show_names_the_segment_and_prints_short_times(env: dict[str, str], imported: str) -> None:
    assert cadence(env, "campaigns", "enroll", CAMPAIGN, "--all").status == 0
    ran = cadence(env, "subscribers", "show", "ann@example.com")
    assert ran.status == 0, ran
    assert re.search(r"│ lower-back-pain\s+│ trail\+no-race\s+│ active", ran.out), ran.out
    assert "joined: 2026-12-07 04:00 UTC (import)" in ran.out
    assert not re.search(r"\d{4}-\d\d-\d\dT\d", ran.out) and "…" not in ran.out, ran.out
    assert max(len(line) for line in ran.out.splitlines()) <= 80, ran.out
    unknown = cadence(env, "subscribers", "search", "--segment", "trail")  # listed, as enroll lists them
    assert unknown.status == 1 and "no segment 'trail'; segments: trail+race-soon (" in one_error_line(unknown)


def test_report_fits_80_columns(env: dict[str, str], imported: str) -> None:
    Path(env["CADENCE_CLOCK"].removeprefix("file:")).write_text("2026-12-07T12:30:00+00:00")
    assert cadence(env, "tick").status == 0
    ran = cadence(env, "report", CAMPAIGN)
    assert ran.status == 0, ran
    assert max(len(line) for line in ran.out.splitlines()) <= 80, ran.out
    assert "…" not in ran.out, ran.out
    assert "1. why-it-hurts" in ran.out and "unsubscribed" in ran.out and "complaints" in ran.out
    table = cadence(env, "report", CAMPAIGN, "--csv")  # for a spreadsheet: plain numbers
    assert table.status == 0, table
    rows = list(csv.DictReader(io.StringIO(table.out)))
    assert rows and all(row["campaign"] == CAMPAIGN and row["hard_bounces"].isdigit() for row in rows), rows


def test_audit_is_one_readable_entry_per_line_with_imports_and_enrollments(env: dict[str, str], imported: str) -> None:
    ran = cadence(env, "audit")
    assert ran.status == 0, ran
    assert "…" not in ran.out and "{" not in ran.out and "'" not in ran.out, ran.out
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC  cli:\S+  subscribers\.import  subscribers$", ran.out, re.M)
    assert "file=contacts.csv, created=2, updated=0, rejected=2, topics=clinic-news" in ran.out, ran.out
    assert re.search(r"campaign\.enroll  campaign:lower-back-pain\n\s+chosen=all, enrolled=2", ran.out), ran.out
    assert cadence(env, "tokens", "add", "zapier").status == 0
    tokens = cadence(env, "tokens", "list")
    assert "…" not in tokens.out and re.search(r"│ zapier │ read  │ 2026-12-07 │ cli:\S+ │ -\s+│ -\s+│", tokens.out)
    erased = cadence(env, "subscribers", "erase", "bob@example.com", "--yes")
    assert "erased bob@example.com; the address stays blocked (audit log: subscriber:" in erased.out, erased


def test_campaigns_commands_send_a_newsletter_to_the_newsletters_commands(env: dict[str, str], imported: str) -> None:
    ran = cadence(env, "campaigns", "pause", NEWSLETTER)  # used to pause the newsletter's mirror only
    assert ran.status == 1
    assert f"'{NEWSLETTER}' is a newsletter, not a drip campaign" in one_error_line(ran)
    assert cadence(env, "newsletters", "schedule", NEWSLETTER).status == 0
    assert cadence(env, "newsletters", "pause", NEWSLETTER).status == 0
    listed = cadence(env, "campaigns", "list")
    assert listed.status == 0 and NEWSLETTER not in listed.out and "held" not in listed.out, listed
    newsletters = cadence(env, "newsletters", "list")
    assert re.search(rf"│ {NEWSLETTER} │ paused", newsletters.out), newsletters.out  # the name, never cut
    tested = cadence(env, "newsletters", "send-test", NEWSLETTER, "--to", "me@clinic.example,boss@clinic.example")
    assert tested.status == 0 and "Test sent to 2 address(es)" in tested.out, tested  # commas, as campaigns take
    unconfirmed = cadence(env, "newsletters", "cancel", NEWSLETTER)  # no terminal: like campaigns cancel
    assert unconfirmed.status == 2 and "add --yes" in one_error_line(unconfirmed)
    assert cadence(env, "newsletters", "cancel", NEWSLETTER, "--yes").status == 0


def test_import_warns_about_a_value_that_looks_like_a_segment_value(env: dict[str, str], imported: str) -> None:
    """``trail`` where the rule wants ``trails`` put the person with the road runners, silently;
    ``roads`` is meant for the fallback and is no mistake."""
    contacts = Path(env["TRIAL_DIR"]) / "more.csv"
    contacts.write_text("Email,Terrain\neve@example.com,trail\nfay@example.com,Trail\ngus@example.com,roads\n")
    ran = cadence(env, "subscribers", "import", str(contacts))
    assert ran.status == 0, ran
    flat = " ".join(ran.out.split())
    assert (
        "warning: terrain: no segment rule of lower-back-pain accepts 'trail' (2 rows); it looks for 'trails', "
        "so those people land in 'Road, path and treadmill runners' (of terrain)" in flat
    ), ran.out
    assert "'roads'" not in flat
