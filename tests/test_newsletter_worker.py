"""A newsletter sent by real processes, proven like the drip (tests/test_worker_crash.py):
PostgreSQL, Redis, two schedulers ticking at once, a ``cadence worker`` killed with kill -9 in
the middle of the send, and an SMTP server. The newsletter is scheduled twice at the same moment
and once more later; a reader unsubscribes after scheduling. Everyone else gets it; any second
copy is limited to the in-flight window of the killed worker and carries the same Message-ID."""

from __future__ import annotations

import email
import email.policy
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Subscriber, SubscriberTopic
from cadence.db.session import transaction
from cadence.errors import InputError
from cadence.operations import newsletters
from cadence.operations.subscribers import import_subscribers, unsubscribe
from tests.support.cluster import cadence_env, processes
from tests.support.keys import TEST_KEYS
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink

pytestmark = pytest.mark.slow
N = 60
CONCURRENCY = 2
NOW = datetime(2027, 1, 12, 14, 0, tzinfo=UTC)
NEWSLETTER = "clinic-news-2027-01"


def test_each_reader_gets_the_newsletter_once_through_double_scheduling_two_ticks_and_a_killed_worker(
    tmp_path: Path, redis_url: str
) -> None:
    def slow_accept(rcpt: str) -> None:
        time.sleep(0.02)  # so the kill lands mid-send

    with (
        postgres_database() as database_url,
        SmtpSink(rcpt_reply=slow_accept) as sink,
        processes(tmp_path / "logs") as procs,
    ):
        clock = FileClock(tmp_path / "clock")
        clock.set(NOW)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BATCH_SIZE="10",
            CADENCE_LEASE_SECONDS="3",
            CADENCE_TICK_SECONDS="0.5",
            CADENCE_COMMIT_EVERY="1",
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        with transaction(settings.database_url) as session:
            rows = [SubscriberInput(f"r{i}@example.com", "", "America/New_York") for i in range(N)]
            import_subscribers(session, rows, NOW, keys=TEST_KEYS)
            for person in session.scalars(select(Subscriber)):
                session.add(SubscriberTopic(subscriber_id=person.id, topic="clinic-news", joined_at=NOW))

        # Two staff schedule it at the same moment (it is 09:00 in New York: due now).
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(newsletters.schedule, settings, NEWSLETTER, at=None, actor="cli:a", now=NOW) for _ in "ab"
            ]
            made = sorted(run.result().new_copies for run in runs)
        assert sum(made) == N, made
        with transaction(settings.database_url) as session:
            leaving = session.scalars(select(Subscriber).where(Subscriber.email == "r7@example.com")).one()
            unsubscribe(session, leaving, NOW, "link")  # after scheduling: must receive nothing

        first = procs.worker(env, name="worker-a", concurrency=CONCURRENCY)
        procs.scheduler(env, name="scheduler-1")
        procs.scheduler(env, name="scheduler-2")  # a second one by mistake
        sink.wait_for(12, timeout=60)
        procs.kill9(first)
        assert len(sink.messages) < N - 1, "the worker finished before it could be killed; slow the sink down"
        with pytest.raises(InputError, match="is sending: it cannot be scheduled again"):
            newsletters.schedule(settings, NEWSLETTER, at=None, actor="cli:a", now=NOW)

        procs.worker(env, name="worker-b", concurrency=CONCURRENCY)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                done = session.scalar(select(func.count()).where(Delivery.state.in_(("sent", "skipped"))))
            if done == N:
                break
            time.sleep(0.5)
        else:
            print(procs.logs())
            pytest.fail(f"only {done} of {N} newsletter copies were finished after the crash")
        report = newsletters.status(settings, NEWSLETTER)

    assert (report["state"], report["sent"], report["skipped"], report["waiting"]) == ("sent", N - 1, 1, 0)
    per_recipient: dict[str, list[str]] = defaultdict(list)
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].append(str(parsed["Message-ID"]))
    assert "r7@example.com" not in per_recipient
    assert len(per_recipient) == N - 1, "someone never got the newsletter"
    duplicates = {rcpt: ids for rcpt, ids in per_recipient.items() if len(ids) > 1}
    # In flight when the worker died: at most one unrecorded group (one message) per pool process.
    assert len(duplicates) <= CONCURRENCY * settings.commit_every, duplicates
    for ids in duplicates.values():
        assert len(set(ids)) == 1, "a second copy must carry the same Message-ID"
