"""``cadence campaigns status`` counts every delivery (issue #9, item 4): refusals and skips that
never got a segment show in each step's totals, with reasons on request, in the table and in
JSON. Driven through the installed ``cadence`` command as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.operations import enrollment
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers, unsubscribe
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import SmtpSink

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
CADENCE = str(Path(sys.executable).with_name("cadence"))


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CADENCE, *args], env={**env, "COLUMNS": "220"}, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """Step 1 sent to 6 runners: 3 accepted, 1 refused with 550 (suppressed), 2 unsubscribed
    after the tick queued them (skipped at send time)."""
    with SmtpSink() as sink:
        sink.reply("gone@example.com", "550 5.1.1 <gone@example.com>: no such user")
        clock = FileClock(tmp_path / "clock")
        clock.set(START)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        runtime = Runtime.from_settings(settings)
        people = ["a", "b", "c", "gone", "left1", "left2"]
        with transaction(settings.database_url) as session:
            rows = [SubscriberInput(f"{p}@example.com", p, "America/New_York", {"terrain": "trails"}) for p in people]
            import_subscribers(session, rows, START, keys=TEST_KEYS)
            enrollment.enroll(
                session, runtime.catalog.get("lower-back-pain"), list(session.scalars(select(Subscriber))), START
            )
        batches = enrollment.tick(runtime).batches
        with transaction(settings.database_url) as session:
            for name in ("left1", "left2"):
                unsubscribe(session, enrollment.find_subscriber(session, f"{name}@example.com"), START, "test")
        for batch in batches:
            enrollment.deliver(runtime, batch)
        runtime.close()
        assert len(sink.messages) == 3
    return env


def test_status_json_counts_failed_and_skipped_deliveries_with_their_reasons(env: dict[str, str]) -> None:
    done = run(env, "campaigns", "status", "lower-back-pain", "--json", "--reasons")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["campaign"] == "lower-back-pain"
    first = report["steps"][0]
    assert first["step"] == 1
    assert first["totals"] == {"due": 0, "queued": 0, "postponed": 0, "sent": 3, "failed": 1, "skipped": 2}
    assert first["reasons"]["failed"] == {"550 5.1.1 <address>: no such user": 1}
    assert first["reasons"]["skipped"] == {"subscriber is unsubscribed": 2}
    # Every delivery of the step counts somewhere.
    assert sum(first["totals"][k] for k in ("sent", "failed", "skipped")) == 6
    assert sum(seg["sent"] for seg in first["segments"].values()) == 3
    later = report["steps"][1]
    assert later["totals"]["failed"] == later["totals"]["skipped"] == 0 and "reasons" in later


def test_status_json_leaves_reasons_out_unless_asked(env: dict[str, str]) -> None:
    done = run(env, "campaigns", "status", "lower-back-pain", "--json")
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)["steps"][0]
    assert "reasons" not in first and first["totals"]["failed"] == 1


def test_status_table_shows_totals_and_reasons(env: dict[str, str]) -> None:
    plain = run(env, "campaigns", "status", "lower-back-pain")
    assert plain.returncode == 0, plain.stderr
    assert "sent, failed, skipped: every delivery of the step" in plain.stdout
    row = next(line for line in plain.stdout.splitlines() if "1. " in line)
    assert [cell.strip() for cell in row.split("│")[-4:-1]] == ["3", "1", "2"]  # sent, failed, skipped
    assert "by reason" not in plain.stdout

    with_reasons = run(env, "campaigns", "status", "lower-back-pain", "--reasons")
    assert with_reasons.returncode == 0, with_reasons.stderr
    assert "550 5.1.1 <address>: no such user" in with_reasons.stdout
    assert "subscriber is unsubscribed" in with_reasons.stdout
    assert "gone@example.com" not in with_reasons.stdout  # reasons group alike; no addresses


def test_status_of_an_unknown_campaign_is_one_clear_error(env: dict[str, str]) -> None:
    done = run(env, "campaigns", "status", "no-such-campaign", "--json")
    assert done.returncode == 1
    assert "no-such-campaign" in done.stderr and done.stdout == ""
