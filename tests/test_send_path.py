"""The send path in one process, against a real SMTP server and real databases: idempotency,
races, and everything that must be re-checked at send time."""

from __future__ import annotations

import email
import email.policy
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Enrollment, Subscriber
from cadence.db.session import transaction
from cadence.operations import enrollment as engine
from cadence.operations.runtime import Runtime
from cadence.operations.subscriber_tools import tag_subscribers
from cadence.operations.subscribers import import_subscribers, suppress, unsubscribe
from tests.support.cluster import ROOT, cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import ReceivedMessage, SmtpSink

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def make_runtime(tmp_path: Path, database_url: str, sink: SmtpSink, **overrides: str) -> Runtime:
    clock = FileClock(tmp_path / "clock")
    clock.set(START)
    env = cadence_env(
        tmp_path,
        CADENCE_DATABASE_URL=database_url,
        CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
        CADENCE_CLOCK=str(clock),
        CADENCE_BATCH_SIZE="5",
        **overrides,
    )
    settings = load_settings(env)
    upgrade(settings.database_url)
    return Runtime.from_settings(settings)


def add_people(runtime: Runtime, n: int, campaign: str = "lower-back-pain") -> list[int]:
    rows = [
        SubscriberInput(f"p{i}@example.com", f"P{i}", "America/New_York", {"terrain": "trails" if i % 2 else "roads"})
        for i in range(n)
    ]
    now = runtime.clock.now()
    with transaction(runtime.settings.database_url) as session:
        import_subscribers(session, rows, now, keys=TEST_KEYS)
        people = list(session.scalars(select(Subscriber)))
        engine.enroll(session, runtime.catalog.get(campaign), people, now)
        return [p.id for p in people]


def states(runtime: Runtime) -> dict[str, int]:
    with transaction(runtime.settings.database_url) as session:
        return dict(session.execute(select(Delivery.state, func.count()).group_by(Delivery.state)).all())  # type: ignore[arg-type]


def test_the_same_send_task_delivered_twice_sends_once(tmp_path: Path, database_url: str, sink: SmtpSink) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 12)
    result = engine.tick(runtime)
    assert result.claimed == 12 and result.enqueued == 12
    for batch in result.batches:
        engine.deliver(runtime, batch)
        engine.deliver(runtime, batch)  # the broker redelivered it
    # ... and concurrently, from two threads, a third time
    threads = [threading.Thread(target=engine.deliver, args=(runtime, b)) for b in result.batches * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(sink.messages) == 12
    assert states(runtime) == {"sent": 12}


def test_two_ticks_racing_claim_each_enrollment_once(tmp_path: Path, database_url: str, sink: SmtpSink) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 40)
    runtime.settings = replace(runtime.settings, batch_size=3)
    results: list[engine.TickResult] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        results.append(engine.tick(runtime, claim_limit=7))

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.claimed for r in results) == 40
    enqueued = [i for r in results for batch in r.batches for i in batch]
    assert len(enqueued) == len(set(enqueued)) == 40
    with transaction(runtime.settings.database_url) as session:
        assert session.scalar(select(func.count()).select_from(Delivery)) == 40
    for r in results:
        for batch in r.batches:
            engine.deliver(runtime, batch)
    assert len(sink.messages) == 40


def test_unsubscribed_or_suppressed_after_queueing_is_not_sent(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 4)
    result = engine.tick(runtime)
    now = runtime.clock.now()
    with transaction(runtime.settings.database_url) as session:
        p0 = session.scalar(select(Subscriber).where(Subscriber.email_key == "p0@example.com"))
        assert p0 is not None
        unsubscribe(session, p0, now, "test")
        suppress(session, "P1@example.com", "complaint", now)
    for batch in result.batches:
        engine.deliver(runtime, batch)
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["p2@example.com", "p3@example.com"]
    assert states(runtime) == {"sent": 2, "skipped": 2}


def book(runtime: Runtime, address: str) -> None:
    """What the clinic's booking system does through the staff API: tag the runner `booked`
    (the course's exit goal, campaigns/lower-back-pain.yaml)."""
    with transaction(runtime.settings.database_url) as session:
        now = runtime.clock.now()
        tag_subscribers(
            session, emails=[address], wanted=None, today=now.date(), add=["booked"], remove=[], actor="test", now=now
        )


def test_an_exit_goal_ends_the_series(tmp_path: Path, database_url: str, sink: SmtpSink) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 2)
    for batch in engine.tick(runtime).batches:
        engine.deliver(runtime, batch)
    assert len(sink.messages) == 2
    book(runtime, "p0@example.com")
    clock = FileClock(Path(runtime.settings.clock_spec.removeprefix("file:")))
    for _ in range(26):  # the course and its day-21 check-in, in one-day steps
        clock.advance(timedelta(days=1))
        for batch in engine.tick(runtime).batches:
            engine.deliver(runtime, batch)
    to_p0 = [m for m in sink.messages if m.rcpt_tos == ("p0@example.com",)]
    to_p1 = [m for m in sink.messages if m.rcpt_tos == ("p1@example.com",)]
    assert len(to_p0) == 1 and len(to_p1) == 8
    with transaction(runtime.settings.database_url) as session:
        ends = dict(session.execute(select(Enrollment.subscriber_id, Enrollment.end_reason)).all())  # type: ignore[arg-type]
    assert "goal reached" in ends.values() and "all steps sent" in ends.values()


def _subject(message: ReceivedMessage) -> str:
    return str(email.message_from_bytes(message.data, policy=email.policy.default)["Subject"])


def test_the_day_21_check_in_reaches_only_those_who_have_not_booked(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 2)
    clock = FileClock(Path(runtime.settings.clock_spec.removeprefix("file:")))
    enrolled = runtime.clock.now()
    booked = False
    for _ in range(30):  # days
        for batch in engine.tick(runtime).batches:
            engine.deliver(runtime, batch)
        if not booked and len([m for m in sink.messages if m.rcpt_tos == ("p0@example.com",)]) == 7:
            # After the last lesson, p0 books a visit (the booking system tags them `booked`).
            book(runtime, "p0@example.com")
            booked = True
        clock.advance(timedelta(days=1))
    assert booked
    to_p0 = [_subject(m) for m in sink.messages if m.rcpt_tos == ("p0@example.com",)]
    to_p1 = [_subject(m) for m in sink.messages if m.rcpt_tos == ("p1@example.com",)]
    assert len(to_p0) == 7 and "Three weeks on: one question about your back" not in to_p0
    assert len(to_p1) == 8 and to_p1[-1] == "Three weeks on: one question about your back"
    with transaction(runtime.settings.database_url) as session:
        # p0's check-in row is there, skipped when it came due ("exit goal reached"); p1's was sent.
        check_ins = {d.state: d for d in session.scalars(select(Delivery).where(Delivery.step_index == 7))}
        assert check_ins["skipped"].last_error == "exit goal reached"
        check_in = check_ins["sent"]
        assert 21 <= (check_in.sent_at - enrolled).days <= 23  # type: ignore[operator]


def test_a_paused_subscriber_is_postponed_not_dropped(tmp_path: Path, database_url: str, sink: SmtpSink) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 1)
    result = engine.tick(runtime)
    with transaction(runtime.settings.database_url) as session:
        p0 = engine.find_subscriber(session, "p0@example.com")
        p0.paused_until = runtime.clock.now() + timedelta(days=14)
    for batch in result.batches:
        assert engine.deliver(runtime, batch).postponed == 1
    assert not sink.messages
    clock = FileClock(Path(runtime.settings.clock_spec.removeprefix("file:")))
    clock.advance(timedelta(days=15))
    for batch in engine.tick(runtime).batches:
        engine.deliver(runtime, batch)
    assert len(sink.messages) == 1


def test_451s_are_retried_and_delivered_550s_fail_and_suppress_and_nobody_else_is_affected(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 6)
    sink.reply("p1@example.com", "451 4.7.1 Try again later", times=2)
    sink.reply("p2@example.com", "550 5.1.1 No such user")
    clock = FileClock(Path(runtime.settings.clock_spec.removeprefix("file:")))
    for _ in range(6 * 12):  # six hours in five-minute steps: long enough for two backoffs
        for batch in engine.tick(runtime).batches:
            engine.deliver(runtime, batch)
        clock.advance(timedelta(minutes=5))
    delivered = sorted(m.rcpt_tos[0] for m in sink.messages)
    assert delivered == ["p0@example.com", "p1@example.com", "p3@example.com", "p4@example.com", "p5@example.com"]
    with transaction(runtime.settings.database_url) as session:
        rows = {
            s.email: (d.state, d.attempts)
            for d, s in session.execute(
                select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            )
            if d.step_index == 0
        }
        p2 = engine.find_subscriber(session, "p2@example.com")
        assert p2.status == "bounced"
    assert rows["p1@example.com"] == ("sent", 3)
    assert rows["p2@example.com"][0] == "failed"
    assert all(rows[f"p{i}@example.com"] == ("sent", 1) for i in (0, 3, 4, 5))
    from cadence.operations.subscribers import is_suppressed

    with transaction(runtime.settings.database_url) as session:
        assert is_suppressed(session, "p2@example.com")


def test_one_tick_claims_thousands_of_due_enrollments(tmp_path: Path, database_url: str, sink: SmtpSink) -> None:
    # Regression: the ledger insert once sent 14 bind parameters per row and failed on
    # PostgreSQL (65,535 at most) as soon as more than 4,681 rows were due in one round.
    runtime = make_runtime(tmp_path, database_url, sink)
    now = runtime.clock.now()
    n = 6000
    with transaction(runtime.settings.database_url) as session:
        session.execute(
            Subscriber.__table__.insert(),
            [
                {
                    "email": f"bulk{i}@example.com",
                    "email_key": f"bulk{i}@example.com",
                    "first_name": "",
                    "attributes": {},
                    "status": "active",
                    "source": "test",
                    "created_at": now,
                    "updated_at": now,
                    "soft_bounces": 0,
                    "consent": {},
                }
                for i in range(n)
            ],
        )
        ids = list(session.scalars(select(Subscriber.id)))
        session.execute(
            Enrollment.__table__.insert(),
            [
                {
                    "subscriber_id": i,
                    "campaign_id": "lower-back-pain",
                    "state": "active",
                    "next_step": 0,
                    "next_send_at": now,
                    "enrolled_at": now,
                    "end_reason": "",
                }
                for i in ids
            ],
        )
    result = engine.tick(runtime, claim_limit=5000)
    assert result.claimed == n and result.enqueued == n
    assert states(runtime) == {"queued": n}
    assert engine.tick(runtime).claimed == 0


def test_two_workers_storing_the_same_new_links_at_once_both_get_the_same_ids(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    # Regression: SELECT-then-INSERT raced into a unique violation that left a batch leased.
    from cadence.db import queries

    runtime = make_runtime(tmp_path, database_url, sink)
    urls = [f"https://precisionbodywork.example/page{i}" for i in range(20)]
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def store() -> None:
        try:
            barrier.wait()
            with transaction(runtime.settings.database_url) as session:
                results.append(queries.store_links(session, urls))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4 and all(r == results[0] for r in results) and len(results[0]) == 20


def test_an_unreachable_smtp_server_puts_the_batch_back_without_using_up_retries(
    tmp_path: Path, database_url: str
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SmtpSink() as sink:
        runtime = make_runtime(tmp_path, database_url, sink)
    runtime.settings = replace(runtime.settings, email_url=f"smtp://127.0.0.1:{port}?tls=none&timeout=2")
    add_people(runtime, 3)
    outcome = engine.deliver(runtime, [i for b in engine.tick(runtime).batches for i in b])
    assert outcome.retrying == 3 and outcome.sent == 0
    now = runtime.clock.now()
    with transaction(runtime.settings.database_url) as session:
        rows = list(session.scalars(select(Delivery)))
    assert {r.state for r in rows} == {"queued"}
    assert all(r.not_before > now and r.attempts == 0 and "unavailable" in r.last_error for r in rows)
    # A long outage: many more rounds than CADENCE_MAX_ATTEMPTS, and still nothing has failed.
    clock = FileClock(Path(runtime.settings.clock_spec.removeprefix("file:")))
    for _ in range(runtime.settings.max_attempts + 3):
        clock.advance(timedelta(minutes=10))
        for batch in engine.tick(runtime).batches:
            engine.deliver(runtime, batch)
    assert states(runtime) == {"queued": 3}


def test_a_refused_message_fails_the_step_without_suppressing_the_address(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 2)
    sink.fail_data("554 5.7.1 Message content rejected")  # the first message's content is refused
    for batch in engine.tick(runtime).batches:
        engine.deliver(runtime, batch)
    with transaction(runtime.settings.database_url) as session:
        rows = dict(session.execute(select(Delivery.subscriber_id, Delivery.state)).all())  # type: ignore[arg-type]
        enrollments = list(session.scalars(select(Enrollment)))
        from cadence.operations.subscribers import is_suppressed

        assert not is_suppressed(session, "p0@example.com") and not is_suppressed(session, "p1@example.com")
        assert {s.status for s in session.scalars(select(Subscriber))} == {"active"}
    assert sorted(rows.values()) == ["failed", "sent"]
    # Both series go on with step 2.
    assert all(e.state == "active" and e.next_step == 1 and e.next_send_at is not None for e in enrollments)


def test_a_message_that_cannot_be_built_moves_the_series_on_instead_of_stalling_it(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 1)
    with transaction(runtime.settings.database_url) as session:
        engine.find_subscriber(session, "p0@example.com").first_name = "Ann\u2028Smith"  # refused in a header
    for batch in engine.tick(runtime).batches:
        engine.deliver(runtime, batch)
    assert states(runtime) == {"failed": 1}
    with transaction(runtime.settings.database_url) as session:
        enrollment = session.scalars(select(Enrollment)).one()
    assert enrollment.state == "active" and enrollment.next_step == 1 and enrollment.next_send_at is not None


def test_an_unsubscribe_during_a_long_batch_is_honoured(tmp_path: Path, database_url: str) -> None:
    import time

    def slow(rcpt: str) -> None:
        time.sleep(0.3)

    with SmtpSink(rcpt_reply=slow) as slow_sink:
        runtime = make_runtime(tmp_path, database_url, slow_sink)
        add_people(runtime, 8)
        runtime.settings = replace(runtime.settings, batch_size=8)
        [batch] = engine.tick(runtime).batches

        def unsubscribe_the_last_one() -> None:
            slow_sink.wait_for(1, timeout=10)
            with transaction(runtime.settings.database_url) as session:
                unsubscribe(session, engine.find_subscriber(session, "p7@example.com"), runtime.clock.now(), "test")

        watcher = threading.Thread(target=unsubscribe_the_last_one)
        watcher.start()
        outcome = engine.deliver(runtime, batch)
        watcher.join()
        received = [m.rcpt_tos[0] for m in slow_sink.messages]
    assert "p7@example.com" not in received
    assert outcome.sent == 7 and outcome.skipped == 1


def test_a_worker_that_lost_its_lease_cannot_mark_rows_another_worker_now_owns(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    from cadence.core.message import Address, OutgoingMessage
    from cadence.db import queries
    from cadence.db.session import engine_for
    from cadence.operations.send_results import PreparedSend, composed, record_results
    from cadence.transports.base import SendResult

    runtime = make_runtime(tmp_path, database_url, sink)
    add_people(runtime, 1)
    [[delivery_id]] = engine.tick(runtime).batches
    now = runtime.clock.now()
    wall = datetime.now(UTC)
    with transaction(runtime.settings.database_url) as session:  # worker A leases it...
        assert queries.claim_deliveries(session, [delivery_id], now, wall, timedelta(seconds=1), "token-a")
    later = wall + timedelta(seconds=5)  # ...stalls past its lease; worker B takes over
    with transaction(runtime.settings.database_url) as session:
        assert queries.claim_deliveries(session, [delivery_id], now, later, timedelta(seconds=600), "token-b")
    message = OutgoingMessage(Address("s@example.com"), Address("p0@example.com"), "s", "<p>h</p>", "t", "<m@x>")
    stale = PreparedSend(
        delivery_id,
        "token-a",
        message.message_id,
        composed(message, b""),
        "why-it-hurts",
        "trail",
        "h",
        1,
        None,
        "p0@example.com",
        1,
        None,
    )
    with engine_for(runtime.settings.database_url).begin() as conn:
        outcome = record_results(conn, [stale], [SendResult("sent")], now, max_attempts=8)
    assert outcome.sent == 1  # A believes it sent, but the ledger row is B's:
    with transaction(runtime.settings.database_url) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None and row.state == "sending" and row.lease_token == "token-b"


def test_an_email_that_cannot_be_built_fails_alone_and_its_series_goes_on(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    """Emails are built group by group while the batch is sent (PreparedSend.compose, issue 15):
    one that cannot be built (here an address stored before validation existed, with a space)
    is recorded as failed, its series moves on to the next step, and the rest of its group and
    batch are sent."""
    runtime = make_runtime(tmp_path, database_url, sink)
    ids = add_people(runtime, 5)
    with transaction(runtime.settings.database_url) as session:
        broken = session.get(Subscriber, ids[1])
        assert broken is not None
        broken.email = "p 1@example.com"
    [batch] = engine.tick(runtime).batches
    outcome = engine.deliver(runtime, batch)
    assert (outcome.sent, outcome.failed) == (4, 1)
    sink.wait_for(4)
    assert sorted(r for m in sink.messages for r in m.rcpt_tos) == [f"p{i}@example.com" for i in (0, 2, 3, 4)]
    with transaction(runtime.settings.database_url) as session:
        failed = session.scalars(select(Delivery).where(Delivery.subscriber_id == ids[1])).one()
        assert failed.state == "failed" and failed.last_error.startswith("render: To:")
        enrollment = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == ids[1])).one()
        assert enrollment.state == "active" and enrollment.next_step == 1 and enrollment.next_send_at is not None
    assert engine.deliver(runtime, batch).sent == 0  # redelivered task: nothing again


def test_a_template_that_breaks_on_one_subscribers_values_fails_that_email_alone(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    """A phase-2 expression can raise a plain Python error on one subscriber's values (here
    ``km + 1`` for a "ten" stored by an import): that is the template's error for that email
    (render: ..., the series goes on), not the batch's. Before, the TypeError escaped compose()
    in the middle of the batch: the rest of it stayed leased until the lease ran out, and the
    same row killed every later attempt of the batch it was in."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    base = templates / "_shared" / "base.mjml"
    greeting = 'Hi [[ subscriber.first_name or "there" ]],'
    assert greeting in base.read_text()
    km = " [% if subscriber.attributes.km is defined %][[ subscriber.attributes.km + 1 ]] km[% endif %]"
    base.write_text(base.read_text().replace(greeting, greeting + km))
    runtime = make_runtime(tmp_path, database_url, sink, CADENCE_TEMPLATES_DIR=str(templates))
    ids = add_people(runtime, 5)
    with transaction(runtime.settings.database_url) as session:
        for i, subscriber_id in enumerate(ids):
            person = session.get(Subscriber, subscriber_id)
            assert person is not None
            person.attributes = {**person.attributes, "km": "ten" if i == 1 else 5 + i}
    [batch] = engine.tick(runtime).batches
    outcome = engine.deliver(runtime, batch)
    assert (outcome.sent, outcome.failed) == (4, 1)
    sink.wait_for(4)
    with transaction(runtime.settings.database_url) as session:
        failed = session.scalars(select(Delivery).where(Delivery.subscriber_id == ids[1])).one()
        assert failed.state == "failed" and failed.last_error.startswith("render: "), failed.last_error
        assert "TypeError" in failed.last_error and "01-why-it-hurts.mjml" in failed.last_error, failed.last_error
        enrollment = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == ids[1])).one()
        assert enrollment.state == "active" and enrollment.next_step == 1
    assert states(runtime) == {"sent": 4, "failed": 1}
