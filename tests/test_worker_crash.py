"""kill -9 a worker in the middle of a batch: every message still arrives, and any duplicate is
limited to the in-flight window (at most CADENCE_COMMIT_EVERY messages, and about 0.1 s of
sending, per worker process) and carries the same Message-ID as its first copy."""

from __future__ import annotations

import email
import email.policy
import time
from collections import defaultdict
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
N = 240
CONCURRENCY = 2


@pytest.mark.parametrize("commit_every", [None, "1"], ids=["default-window", "commit-every-message"])
def test_a_worker_killed_mid_batch_loses_nothing(tmp_path: Path, redis_url: str, commit_every: str | None) -> None:
    def slow_accept(rcpt: str) -> None:
        time.sleep(0.01)  # ~100 messages/s, so the kill lands mid-batch

    with (
        postgres_database() as database_url,
        SmtpSink(rcpt_reply=slow_accept) as sink,
        processes(tmp_path / "logs") as procs,
    ):
        clock = FileClock(tmp_path / "clock")
        clock.set(datetime(2026, 12, 7, 12, 30, tzinfo=UTC))  # inside the New York window
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BATCH_SIZE="40",
            CADENCE_LEASE_SECONDS="3",
            CADENCE_TICK_SECONDS="0.5",
            **({"CADENCE_COMMIT_EVERY": commit_every} if commit_every else {}),
        )
        settings = enrolled_runners(env, N, clock.now(), prefix="r")

        first = procs.worker(env, name="worker-a", concurrency=CONCURRENCY)
        procs.scheduler(env)
        sink.wait_for(30, timeout=60)
        procs.kill9(first)
        killed_at = len(sink.messages)
        assert killed_at < N, "the worker finished before it could be killed; slow the sink down"

        procs.worker(env, name="worker-b", concurrency=CONCURRENCY)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                sent = session.scalar(select(func.count()).where(Delivery.state == "sent"))
            if sent == N:
                break
            time.sleep(0.5)
        else:
            print(procs.logs())
            pytest.fail(f"only {sent} of {N} deliveries were sent after the crash")

    per_recipient: dict[str, list[str]] = defaultdict(list)
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].append(str(parsed["Message-ID"]))
    assert len(per_recipient) == N, "someone never got the email"
    duplicates = {rcpt: ids for rcpt, ids in per_recipient.items() if len(ids) > 1}
    # In flight when the worker died: at most one uncommitted group per pool process.
    assert len(duplicates) <= CONCURRENCY * settings.commit_every
    for ids in duplicates.values():
        assert len(set(ids)) == 1, "a duplicate must carry the same Message-ID"
