"""PostgreSQL restarted in immediate mode (as in a crash) while workers are sending (issue #9,
item 3): every message arrives exactly once. A worker keeps the results of its batch, rewrites
those the database lost (the ledger commits asynchronously) once the server answers again, and
goes on; nothing is given back to be sent a second time.

The server is a private cluster this test starts itself (tests/support/pgserver.py), never the
machine's shared one."""

from __future__ import annotations

import email
import email.policy
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.operations import enrollment
from cadence.operations.enrollment import enroll
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import cadence_env, enrolled_runners, processes
from tests.support.keys import TEST_KEYS
from tests.support.pgserver import PrivateServer
from tests.support.smtpd import SmtpSink

pytestmark = pytest.mark.slow
START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
N = 300
REFUSED = {"r7@example.com", "r150@example.com", "r290@example.com"}


def test_a_database_restart_mid_send_sends_each_message_exactly_once(tmp_path: Path, redis_url: str) -> None:
    def slow_accept(rcpt: str) -> str | None:
        time.sleep(0.01)  # ~100 messages/s per worker process: the restart lands mid-batch
        return "550 5.1.1 No such user" if rcpt in REFUSED else None

    with (
        PrivateServer() as pg,
        SmtpSink(rcpt_reply=slow_accept) as sink,
        processes(tmp_path / "logs") as procs,
    ):
        clock = FileClock(tmp_path / "clock")
        clock.set(START)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=pg.url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BATCH_SIZE="60",
            CADENCE_LEASE_SECONDS="40",
            CADENCE_TICK_SECONDS="0.5",
        )
        settings = enrolled_runners(env, N, START, prefix="r")

        procs.worker(env, concurrency=2)
        procs.scheduler(env)
        sink.wait_for(60, timeout=60)
        pg.restart(mode="immediate", down_for=2.0)
        restarted_at = len(sink.messages)
        assert restarted_at < N - 60, "the workers finished before the restart; slow the sink down"

        deadline = time.monotonic() + 120
        done = -1
        while time.monotonic() < deadline:
            try:
                with transaction(settings.database_url) as session:
                    done = session.scalar(
                        select(func.count()).where(Delivery.state.in_(("sent", "failed")), Delivery.step_index == 0)
                    )
                    if done == N:
                        suppressed = session.scalar(select(func.count()).select_from(Suppression))
                        break
            except Exception:  # the server is still recovering
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"{done} of {N} deliveries finished after the restart\n{procs.logs()}\n{pg.log()}")
        assert suppressed == len(REFUSED)
        worker_log = (tmp_path / "logs" / "worker.log").read_text(errors="replace")

    per_recipient: dict[str, list[str]] = defaultdict(list)
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].append(str(parsed["Message-ID"]))
    assert len(per_recipient) == N - len(REFUSED)
    duplicates = {rcpt: ids for rcpt, ids in per_recipient.items() if len(ids) > 1}
    assert duplicates == {}, f"sent more than once after a database restart: {sorted(duplicates)}"
    assert "results of this batch kept" in worker_log, "the restart never reached a worker's ledger write"


def test_a_worker_gives_up_once_its_lease_could_run_out_and_nothing_is_lost(tmp_path: Path) -> None:
    """The retries are bounded by the lease: with the server down for longer, the send task
    raises the database error instead of hanging, and the rows come back to be sent later."""
    stopped = False
    with PrivateServer() as pg:

        def stop_the_database(rcpt: str) -> None:
            nonlocal stopped
            if rcpt == "r3@example.com" and not stopped:
                stopped = True
                pg.stop("immediate")

        with SmtpSink(rcpt_reply=stop_the_database) as sink:
            clock = FileClock(tmp_path / "clock")
            clock.set(START)
            env = cadence_env(
                tmp_path / "data",
                CADENCE_DATABASE_URL=pg.url,
                CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
                CADENCE_CLOCK=str(clock),
                CADENCE_LEASE_SECONDS="2",
                CADENCE_COMMIT_EVERY="1",
            )
            settings = load_settings(env)
            upgrade(settings.database_url)
            runtime = Runtime.from_settings(settings)
            with transaction(settings.database_url) as session:
                rows = [SubscriberInput(f"r{i}@example.com", "", "America/New_York", {}) for i in range(8)]
                import_subscribers(session, rows, START, keys=TEST_KEYS)
                people = list(session.scalars(select(Subscriber)))
                enroll(session, runtime.catalog.get("lower-back-pain"), people, START)
            [ids] = enrollment.tick(runtime).batches
            with pytest.raises(OperationalError):
                enrollment.deliver(runtime, ids)
            assert stopped
            pg.start()
            time.sleep(2.5)  # the lease runs out: another worker may take the rows over now
            for batch in enrollment.tick(runtime).batches:
                enrollment.deliver(runtime, batch)
            runtime.close()
            with transaction(settings.database_url) as session:
                assert session.scalar(select(func.count()).where(Delivery.state == "sent")) == 8
            assert {m.rcpt_tos[0] for m in sink.messages} == {f"r{i}@example.com" for i in range(8)}
