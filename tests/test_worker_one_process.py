"""Workers of one process (issue 15), killed with kill -9 mid-batch while a second one finishes:
every message arrives, and the duplicates stay within the groups in flight, each with the
Message-ID of its first copy.

- ``--concurrency 1`` (Celery's solo pool, no prefork parent) sending over three SMTP connections
  (``&connections=3``): one group in flight, however many connections carry it;
- the default worker (the threads pool, 4 batches at once in one process, each thread with its own
  runtime and connection): at most four groups in flight."""

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
N = 150


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4: the parent's pid
                found.append(int(entry.name))
    return found


LAYOUTS = {
    # name: (worker arguments, SMTP connections per process, groups in flight at most)
    "solo-3-connections": (["worker", "--concurrency", "1", "--loglevel", "INFO"], 3, 1),
    "default-4-threads": (["worker", "--loglevel", "INFO"], 1, 4),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_one_process_worker_killed_mid_batch_loses_nothing(tmp_path: Path, redis_url: str, layout: str) -> None:
    args, connections, in_flight = LAYOUTS[layout]

    def slow_accept(rcpt: str) -> None:
        time.sleep(0.01)  # ~100 messages/s for all connections together: the kill lands mid-batch

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
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none&connections={connections}",
            CADENCE_CLOCK=str(clock),
            CADENCE_BATCH_SIZE="50",
            CADENCE_LEASE_SECONDS="3",
            CADENCE_TICK_SECONDS="0.5",
        )
        settings = enrolled_runners(env, N, clock.now(), prefix="s")

        first = procs.start("worker-a", args, env)
        procs.scheduler(env)
        sink.wait_for(30, timeout=60)
        assert children_of(first.pid) == [], "the worker forked a pool"
        used = {m.connection for m in sink.messages}
        procs.kill9(first)
        killed_at = len(sink.messages)
        assert killed_at < N, "the worker finished before it could be killed; slow the sink down"
        # Several connections at once (how many of the three depends on the group sizes so far).
        assert len(used) >= 2, f"one worker process should send over several connections, used {sorted(used)}"

        procs.start("worker-b", args, env)
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

    # No batch failed on the way (a race between threads, e.g. two creating the metrics at once,
    # would only show as a delay here: the lease hands the batch to someone else).
    for name in ("worker-a", "worker-b"):
        log = (tmp_path / "logs" / f"{name}.log").read_text(errors="replace")
        assert "raised unexpected" not in log, log[-3000:]
    per_recipient: dict[str, list[str]] = defaultdict(list)
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].append(str(parsed["Message-ID"]))
    assert len(per_recipient) == N, "someone never got the email"
    duplicates = {rcpt: ids for rcpt, ids in per_recipient.items() if len(ids) > 1}
    # In flight when the worker died: at most one uncommitted group per sending thread.
    assert len(duplicates) <= in_flight * settings.commit_every
    assert all(len(set(ids)) == 1 for ids in duplicates.values()), "a duplicate must carry the same Message-ID"
