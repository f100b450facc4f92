"""A permanent refusal (5xx to RCPT) is recorded the moment the server gives it, in its own
commit, not with its group (issue #9, item 5): a worker killed right after it can make the next
worker repeat successful sends (the documented window), never the bounced one."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput, email_hash
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.files.catalog import CampaignCatalog
from cadence.operations.enrollment import enroll
from cadence.operations.subscribers import import_subscribers
from cadence.transports.base import SendResult
from cadence.transports.smtp import SmtpTransport
from tests.support.cluster import cadence_env, processes
from tests.support.keys import TEST_KEYS
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink
from tests.test_transport_smtp import batch

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
N = 30
GONE = "gone@example.com"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-command-per-round-trip"])
def test_the_smtp_transport_reports_a_refusal_before_the_next_message(pipelining: bool) -> None:
    seen: list[tuple[int, str, int]] = []
    with SmtpSink(pipelining=pipelining) as sink:
        sink.reply("gone@example.org", "550 5.1.1 No such user")
        transport = SmtpTransport(sink.host, sink.port, tls="none", timeout=5)
        try:

            def on_refused(index: int, result: SendResult) -> None:
                seen.append((index, result.status, len(sink.messages)))

            results = transport.send_many(
                batch("a@example.org", "gone@example.org", "b@example.org", "c@example.org"), on_refused=on_refused
            )
        finally:
            transport.close()
    assert [r.status for r in results] == ["sent", "permanent", "sent", "sent"]
    # Called once, for message 1, while only message 0 had been delivered.
    assert seen == [(1, "permanent", 1)]


@pytest.mark.slow
def test_a_worker_killed_right_after_a_refusal_never_tries_that_address_again(tmp_path: Path, redis_url: str) -> None:
    attempts: Counter[str] = Counter()
    refused = threading.Event()
    stalled = threading.Event()
    release = threading.Event()

    def reply(rcpt: str) -> str | None:
        attempts[rcpt] += 1
        if rcpt == GONE:
            refused.set()
            return "550 5.1.1 No such user"
        if refused.is_set() and not stalled.is_set():
            # The next recipient after the refusal: hold the worker here, mid-group, until the
            # test has killed it.
            stalled.set()
            release.wait(60)
        return None

    with (
        postgres_database() as database_url,
        SmtpSink(rcpt_reply=reply) as sink,
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
            CADENCE_BATCH_SIZE=str(N),
            CADENCE_LEASE_SECONDS="3",
            CADENCE_TICK_SECONDS="0.5",
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        campaign = CampaignCatalog(settings.campaigns_dir).get("lower-back-pain")
        with transaction(settings.database_url) as session:
            rows = [SubscriberInput(f"k{i}@example.com", "", "America/New_York", {}) for i in range(N - 1)]
            # Mid-batch, where the groups (sending.GROUP_SECONDS) have grown past one message, so
            # the stalled recipient after it is normally in the same, not yet recorded, group.
            rows.insert(15, SubscriberInput(GONE, "", "America/New_York", {}))
            import_subscribers(session, rows, START, keys=TEST_KEYS)
            enroll(session, campaign, list(session.scalars(select(Subscriber))), START)

        first = procs.worker(env, name="worker-a", concurrency=1)
        procs.scheduler(env)
        assert stalled.wait(60), f"the refused address was never tried:\n{procs.logs()}"
        suppressed = False
        deadline = time.monotonic() + 15
        while not suppressed and time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                suppressed = session.scalar(select(func.count()).where(Suppression.email_hash == email_hash(GONE))) == 1
            time.sleep(0.1)
        procs.kill9(first)  # mid-group: the messages before the stall are sent but not recorded
        release.set()

        procs.worker(env, name="worker-b", concurrency=1)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                finished = session.scalar(select(func.count()).where(Delivery.state.in_(("sent", "failed"))))
            if finished == N:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"only {finished} of {N} deliveries finished after the crash:\n{procs.logs()}")
        with transaction(settings.database_url) as session:
            gone = session.scalar(select(Subscriber).where(Subscriber.email_key == GONE))
            assert gone is not None and gone.status == "bounced"
            assert session.scalar(select(Delivery.state).where(Delivery.subscriber_id == gone.id)) == "failed"

    assert suppressed, "the refusal was not recorded while the worker went on with its group"
    assert attempts[GONE] == 1, "a crash made the bounced address be tried again"
    per_recipient: dict[str, set[str]] = defaultdict(set)
    for message in sink.messages:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        per_recipient[message.rcpt_tos[0]].add(str(parsed["Message-ID"]))
    assert len(per_recipient) == N - 1 and GONE not in per_recipient
    assert all(len(ids) == 1 for ids in per_recipient.values()), "a repeated send keeps its Message-ID"
