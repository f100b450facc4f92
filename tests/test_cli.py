"""The ``cadence`` command as a script sees it: run as a subprocess, it exits 0, 1 (an error) or
2 (a usage error) with one line on stderr, and never prints a traceback unless --debug."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Enrollment, Subscriber
from cadence.db.session import transaction
from cadence.operations import enrollment as engine
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers, suppress
from tests.support.cluster import ROOT, cadence_env
from tests.support.keys import TEST_KEYS

CADENCE = str(Path(sys.executable).with_name("cadence"))  # the installed entry point
START = "2026-12-07T12:30:00+00:00"  # a Monday, inside the send window in New York


@dataclass
class Ran:
    status: int
    out: str
    err: str


def cadence(env: dict[str, str], *args: str, cwd: Path | None = None) -> Ran:
    done = subprocess.run([CADENCE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)
    ran = Ran(done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in ran.out + ran.err or "--debug" in args, ran
    return ran


def one_error_line(ran: Ran) -> str:
    lines = ran.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), ran
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A data dir of its own with a file clock; the database is NOT initialised."""
    (tmp_path / "clock").write_text(START)
    return cadence_env(tmp_path / "data", CADENCE_CLOCK=f"file:{tmp_path / 'clock'}", COLUMNS="200")


@pytest.fixture
def ready(env: dict[str, str]) -> dict[str, str]:
    """`env` after `cadence db upgrade`, with one subscriber and one suppressed address."""
    upgrade(load_settings(env).database_url)
    now = datetime.fromisoformat(START)
    with transaction(load_settings(env).database_url) as session:
        ann = SubscriberInput("ann@example.com", "Ann", "America/New_York")
        import_subscribers(session, [ann], now, keys=TEST_KEYS)
        suppress(session, "gone@example.com", "hard_bounce", now)
    return env


BAD_INVOCATIONS = [
    # (arguments, exit status, what the one line on stderr says)
    (["nosuch"], 2, "No such command 'nosuch' (see `cadence --help`)"),
    (["--nosuch"], 2, "No such option: --nosuch"),
    (["subscribers", "add"], 2, "Missing argument 'email'"),
    (["campaigns", "enroll", "lower-back-pain"], 2, "give exactly one of --all, --segment S or --email E"),
    (["campaigns", "enroll", "lower-back-pain", "--all", "--email", "a@example.com"], 2, "give exactly one of"),
    (["campaigns", "simulate", "lower-back-pain"], 2, "give either --email E or one or more --attr"),
    (["worker", "--concurrency", "many"], 2, "Invalid value for '--concurrency'"),
    (["worker", "--concurrency", "0"], 2, "Invalid value for '--concurrency'"),
    (["worker", "--pool", "gevent"], 2, "--pool 'gevent': expected solo, prefork or threads"),
    (["worker", "--pool", "solo", "--concurrency", "2"], 2, "--pool solo sends one batch at a time"),
    (["campaigns", "simulate", "nosuch", "--attr", "a=b"], 1, "no campaign 'nosuch'"),
    (["campaigns", "status", "nosuch"], 1, "no campaign 'nosuch'"),
    (["campaigns", "validate", "nosuch"], 1, "no campaign 'nosuch'"),
    (["campaigns", "enroll", "lower-back-pain", "--email", "nobody@example.com"], 1, "no subscriber"),
    (["campaigns", "enroll", "lower-back-pain", "--segment", "nosuch"], 1, "nosuch"),
    (["subscribers", "add", "gone@example.com"], 1, "gone@example.com is suppressed"),
    (["subscribers", "add", "not-an-address"], 1, "email: 'not-an-address' is not a valid email address"),
    (["subscribers", "add", "b@example.com", "--tz", "Mars/Base"], 1, "--tz: 'Mars/Base' is not an IANA time zone"),
    (["subscribers", "add", "b@example.com", "--attr", "novalue"], 1, "--attr: 'novalue' is not key=value"),
    (["subscribers", "import", "/no/such/file.csv"], 1, "/no/such/file.csv: no such file"),
    (["subscribers", "import", "/"], 1, "/:"),
    (["bounces", "process"], 2, "give a DIR to read, --imap, or both"),
]


@pytest.mark.parametrize(("args", "status", "message"), BAD_INVOCATIONS, ids=[" ".join(a) for a, *_ in BAD_INVOCATIONS])
def test_a_bad_invocation_exits_non_zero_with_one_line_naming_the_problem(
    ready: dict[str, str], args: list[str], status: int, message: str
) -> None:
    ran = cadence(ready, *args)
    assert ran.status == status, ran
    assert message in one_error_line(ran)


def test_version_prints_the_installed_version() -> None:
    from importlib.metadata import version

    ran = cadence(cadence_env(Path("/nonexistent")), "--version")
    assert (ran.status, ran.out.strip(), ran.err) == (0, f"cadence {version('cadence')}", "")


def test_help_works_without_any_settings() -> None:
    ran = cadence(cadence_env(Path("/nonexistent")), "--help")
    assert ran.status == 0 and "subscribers" in ran.out and "--debug" in ran.out


def test_a_bare_command_group_shows_its_help_and_exits_2(ready: dict[str, str]) -> None:
    ran = cadence(ready, "subscribers")
    assert ran.status == 2 and "import" in ran.out + ran.err


def test_any_command_before_db_upgrade_says_to_run_it(database_url: str, tmp_path: Path) -> None:
    env = cadence_env(tmp_path, CADENCE_DATABASE_URL=database_url)
    for args in (["campaigns", "status", "lower-back-pain"], ["subscribers", "add", "a@example.com"]):
        ran = cadence(env, *args)
        assert ran.status == 1
        assert one_error_line(ran) == "error: the database is not initialised: run `cadence db upgrade`"
    assert cadence(env, "db", "upgrade").status == 0
    assert cadence(env, "campaigns", "status", "lower-back-pain").status == 0


def test_an_unreachable_database_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = cadence_env(tmp_path, CADENCE_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    ran = cadence(env, "db", "upgrade")
    assert ran.status == 1 and "cannot reach the database of CADENCE_DATABASE_URL" in one_error_line(ran)


def test_debug_shows_the_traceback_of_an_unexpected_error(env: dict[str, str]) -> None:
    ran = cadence(env, "--debug", "campaigns", "status", "lower-back-pain")
    assert ran.status == 1 and "Traceback" in ran.err and "no such table" in ran.err


@pytest.mark.parametrize(
    ("clock", "message"),
    [
        ("file:", "CADENCE_CLOCK: 'file:' needs the path of a file"),
        ("file:{tmp}/missing", "CADENCE_CLOCK: clock file {tmp}/missing does not exist"),
        ("file:{tmp}/garbage", "CADENCE_CLOCK: clock file {tmp}/garbage: 'next tuesday' is not an ISO 8601 date-time"),
        ("file:{tmp}", "CADENCE_CLOCK: cannot read clock file {tmp}"),
        ("sim:yesterday", "CADENCE_CLOCK: 'sim:yesterday' is not sim:<ISO start>@<epoch>x<speed>"),
        ("sundial", "CADENCE_CLOCK: unknown clock 'sundial'"),
    ],
)
def test_a_bad_clock_is_one_line_naming_the_variable(
    ready: dict[str, str], tmp_path: Path, clock: str, message: str
) -> None:
    (tmp_path / "garbage").write_text("next tuesday")
    env = {**ready, "CADENCE_CLOCK": clock.format(tmp=tmp_path)}
    ran = cadence(env, "subscribers", "add", "new@example.com")
    assert ran.status == 1
    assert message.format(tmp=tmp_path) in one_error_line(ran)


def test_validate_with_problems_exits_1(ready: dict[str, str], tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    step = templates / "lower-back-pain" / "01-why-it-hurts.mjml"
    source = step.read_text(encoding="utf-8")
    assert "<p>" in source
    step.write_text(source.replace("<p>", "<p>{{ clinic.fax }}", 1), encoding="utf-8")
    ran = cadence({**ready, "CADENCE_TEMPLATES_DIR": str(templates)}, "campaigns", "validate", "lower-back-pain")
    assert ran.status == 1 and "problem(s)" in ran.out and "fax" in ran.out
    assert cadence(ready, "campaigns", "validate", "lower-back-pain").status == 0


def test_commands_that_succeed_exit_0(ready: dict[str, str]) -> None:
    assert cadence(ready, "subscribers", "add", "bob@example.com", "--name", "Bob").status == 0
    enrolled = cadence(ready, "campaigns", "enroll", "lower-back-pain", "--all")
    assert enrolled.status == 0 and "2 enrolled" in enrolled.out


def test_emails_held_while_the_campaign_file_was_gone_go_out_once_it_is_back(
    database_url: str, tmp_path: Path
) -> None:
    """The file vanished while a step was due: its deliveries wait (not failed) and the
    enrollments stay active (not cancelled). Once the file is back, `enroll` has nothing to
    resume and the emails go out (issue 13)."""
    campaigns = tmp_path / "campaigns"
    shutil.copytree(ROOT / "campaigns", campaigns)
    (tmp_path / "clock").write_text(START)
    env = cadence_env(
        tmp_path / "data",
        CADENCE_DATABASE_URL=database_url,
        CADENCE_CAMPAIGNS_DIR=str(campaigns),
        CADENCE_CLOCK=f"file:{tmp_path / 'clock'}",
    )
    assert cadence(env, "db", "upgrade").status == 0
    for i in range(3):
        assert cadence(env, "subscribers", "add", f"r{i}@example.com", "--tz", "America/New_York").status == 0
    assert "3 enrolled" in cadence(env, "campaigns", "enroll", "lower-back-pain", "--all").out
    runtime = Runtime.from_settings(load_settings(env))
    (tmp_path / "clock").write_text("2026-12-09T12:30:00+00:00")  # step 1 is due
    first = engine.tick(runtime)
    assert first.claimed == 3
    (campaigns / "lower-back-pain.yaml").rename(tmp_path / "away.yaml")
    for batch in first.batches:
        engine.deliver(runtime, batch)
    with transaction(runtime.settings.database_url) as session:
        assert set(session.scalars(select(Enrollment.state))) == {"active"}
        assert set(session.scalars(select(Delivery.state))) == {"queued"}
    (tmp_path / "away.yaml").rename(campaigns / "lower-back-pain.yaml")

    ran = cadence(env, "campaigns", "enroll", "lower-back-pain", "--all")
    assert ran.status == 0 and "3 already enrolled" in ran.out

    again = engine.tick(runtime)
    for batch in again.batches:
        engine.deliver(runtime, batch)
    with transaction(runtime.settings.database_url) as session:
        assert list(session.scalars(select(Delivery.state))) == ["sent"] * 3
        for enrollment in session.scalars(select(Enrollment)):
            assert enrollment.state == "active" and enrollment.next_step == 1 and enrollment.next_send_at is not None
    assert len(list((tmp_path / "data" / "outbox").rglob("*.eml"))) == 3


@pytest.mark.parametrize("speed", ["0", "-5"])
def test_a_demo_speed_that_is_not_positive_is_a_usage_error(tmp_path: Path, speed: str) -> None:
    ran = cadence(cadence_env(tmp_path / "data"), "demo", "--speed", speed)
    assert ran.status == 2 and "--speed" in one_error_line(ran)
    assert not (tmp_path / "data" / "cadence.db").exists()  # refused before touching anything


@pytest.mark.slow
def test_demo_on_an_existing_data_dir_starts_from_a_clean_database_and_outbox(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data")
    assert cadence(env, "db", "upgrade").status == 0
    assert cadence(env, "subscribers", "add", "left-over@example.com").status == 0
    stale = tmp_path / "data" / "outbox" / "stale.eml"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    refused = cadence(env, "demo", "--speed", "5000000")  # someone's real subscriber is in there
    assert refused.status == 1 and "1 subscriber(s) who are not demo runners" in one_error_line(refused)
    assert stale.exists() and cadence(env, "subscribers", "add", "left-over@example.com").status == 0
    ran = cadence({**env, "COLUMNS": "250"}, "demo", "--speed", "5000000", "--force")
    assert ran.status == 0, ran
    # The status table's last three columns are each step's sent / failed / skipped totals.
    step_rows = [line for line in ran.out.splitlines() if re.match(r"│ \d\. ", line)]
    totals = [[cell.strip() for cell in row.split("│")[-4:-1]] for row in step_rows]
    assert totals == [["30", "0", "0"]] * 8, ran.out
    assert "30 runners imported, 30 enrolled" in ran.out
    with transaction(load_settings(env).database_url) as session:
        emails = list(session.scalars(select(Subscriber.email)))
        assert len(emails) == 30 and "left-over@example.com" not in emails
        assert len(list(session.scalars(select(Delivery.id)))) == 240  # 30 runners x 8 emails
    assert not stale.exists() and len(list(stale.parent.rglob("*.eml"))) == 240


def test_demo_fresh_deletes_only_a_sqlite_file_inside_the_data_dir(tmp_path: Path) -> None:
    from cadence.operations.demo import sqlite_file_in_data_dir

    data = tmp_path / "data"
    inside = load_settings(cadence_env(data))
    assert sqlite_file_in_data_dir(inside) == (data / "cadence.db").resolve()
    elsewhere = load_settings(cadence_env(data, CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'mine.db'}"))
    assert sqlite_file_in_data_dir(elsewhere) is None
    sneaky = load_settings(cadence_env(data, CADENCE_DATABASE_URL=f"sqlite:///{data / '..' / 'mine.db'}"))
    assert sqlite_file_in_data_dir(sneaky) is None
    postgres = load_settings(cadence_env(data, CADENCE_DATABASE_URL="postgresql://u@db/cadence"))
    assert sqlite_file_in_data_dir(postgres) is None
