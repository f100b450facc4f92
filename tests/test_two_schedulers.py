"""Two ``cadence scheduler`` processes on one data directory by mistake (issue #9, item 2): both
keep running (no shared schedule file to race on: the tick's timing lives in the database) and
nothing is sent twice (the tick takes a lock and the ledger is unique)."""

from __future__ import annotations

import email
import email.policy
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.db.models import Delivery
from cadence.db.session import transaction
from tests.support.cluster import cadence_env, enrolled_runners, processes
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink

pytestmark = pytest.mark.slow
START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
N = 60
RUN_SECONDS = 8.0


def test_two_schedulers_on_one_data_dir_both_live_and_send_once(tmp_path: Path, redis_url: str) -> None:
    def slow_accept(rcpt: str) -> None:
        time.sleep(0.05)  # spread the sending over several seconds of ticks from both schedulers

    with (
        postgres_database() as database_url,
        SmtpSink(rcpt_reply=slow_accept) as sink,
        processes(tmp_path / "logs") as procs,
    ):
        clock = FileClock(tmp_path / "clock")
        clock.set(START)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_TICK_SECONDS="0.1",
            CADENCE_BATCH_SIZE="5",
        )
        settings = enrolled_runners(env, N, START, prefix="s")

        first = procs.scheduler(env, name="scheduler-a")
        second = procs.scheduler(env, name="scheduler-b")
        procs.worker(env, concurrency=2)
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            assert first.poll() is None and second.poll() is None, f"a scheduler died:\n{procs.logs()}"
            time.sleep(0.2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                sent = session.scalar(select(func.count()).where(Delivery.state == "sent"))
            if sent == N:
                break
            time.sleep(0.3)
        assert sent == N, procs.logs()
        assert first.poll() is None and second.poll() is None, f"a scheduler died:\n{procs.logs()}"
        logs = procs.logs()
        assert "Traceback" not in logs, logs
        for name in ("scheduler-a", "scheduler-b"):  # both queued ticks: neither sat idle
            assert "Sending due task cadence-tick" in (tmp_path / "logs" / f"{name}.log").read_text()
        # The cause of the crash is gone: no schedule file for two processes to race on.
        assert not list((tmp_path / "data").glob("celerybeat-schedule*"))

    per_recipient = Counter(m.rcpt_tos[0] for m in sink.messages)
    assert len(per_recipient) == N
    assert set(per_recipient.values()) == {1}, "a second scheduler must not double-send"
    ids = {str(email.message_from_bytes(m.data, policy=email.policy.default)["Message-ID"]) for m in sink.messages}
    assert len(ids) == N
