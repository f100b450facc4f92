"""Transactional emails (confirmation, emailed links) leave through the drip's send path: a
``kind='transactional'`` ledger row, retried, bounce-mapped, re-checked at send time, with no
link stored in the database, and never counted in a drip report (issue 12)."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.clock import FileClock, wall_now
from cadence.config import load_settings
from cadence.db import queries
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Event, Subscriber, Suppression
from cadence.db.session import transaction
from cadence.errors import ConfigError, InputError
from cadence.operations import enrollment
from cadence.operations.bounce_events import BounceEvent, apply_bounce_events
from cadence.operations.drip import campaign_status
from cadence.operations.runtime import Runtime
from cadence.operations.signup import Answers, SignupContext, SignupData, confirm, read_confirmation_token, sign_up
from cadence.operations.transactional import queue_transactional, send_transactional
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import ReceivedMessage, SmtpSink
from tests.support.web import find_url

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
FORM = "runners"  # the signup form whose copy a confirmation carries
DRIP = "lower-back-pain"
WHERE = SignupContext("192.0.2.7", "test", "web:subscribe", "https://clinic.example/")


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
def runtime(tmp_path: Path, database_url: str, sink: SmtpSink) -> Iterator[Runtime]:
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
    built = Runtime.from_settings(settings)
    yield built
    built.close()


def signed_up(runtime: Runtime, address: str) -> int:
    """A pending subscriber who just signed up through the form's function; their id."""
    with transaction(runtime.settings.database_url) as session:
        confirmation = sign_up(
            session,
            SignupData(address, "Robin", Answers(terrain="trails", training_for_race=False)),
            WHERE,
            runtime.clock.now(),
            secret_key=runtime.settings.secret_key,
            keys=TEST_KEYS,
        )
        assert confirmation is not None
        return confirmation.subscriber_id


def rows(runtime: Runtime) -> list[Delivery]:
    with transaction(runtime.settings.database_url) as session:
        found = list(session.scalars(select(Delivery).order_by(Delivery.id)))
        session.expunge_all()
        return found


def parse(received: ReceivedMessage) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_confirmation_is_a_sent_ledger_row_whose_link_is_not_in_the_database(
    runtime: Runtime, sink: SmtpSink
) -> None:
    subscriber_id = signed_up(runtime, "robin@example.com")
    delivery_id = send_transactional(runtime, "confirm", subscriber_id, FORM)  # no enqueue: sent here

    [received] = sink.wait_for(1)
    message = parse(received)
    [row] = rows(runtime)
    assert (row.id, row.kind, row.state, row.enrollment_id) == (delivery_id, "transactional", "sent", None)
    assert (row.campaign_id, row.step_id, row.segment_id, row.attempts) == ("_transactional", "confirm", FORM, 1)
    # One Message-ID per ledger row, as for a drip step: a bounce names the delivery.
    assert message["Message-ID"] == row.message_id and row.message_id.startswith(f"<d{delivery_id}.")
    assert message["To"] == "robin@example.com" and "List-Unsubscribe" not in message
    url = find_url(message, "/confirm/")
    token = url.rsplit("/", 1)[1]
    payload = read_confirmation_token(runtime.settings.secret_key, token, runtime.clock.now())
    with transaction(runtime.settings.database_url) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None and payload == [subscriber_id, subscriber.consent["signup_id"]]
        # The secret link exists only in the email: rebuilt at send time from the row and the key.
        stored = " ".join(str(v) for d in session.scalars(select(Delivery)) for v in vars(d).values())
    assert token not in stored and "/confirm/" not in stored


def test_a_refusal_for_now_is_retried_by_the_scheduler_and_a_hard_bounce_suppresses(
    runtime: Runtime, sink: SmtpSink
) -> None:
    sink.reply("busy@example.com", "451 4.7.1 Try later", times=1)
    sink.reply("gone@example.com", "550 5.1.1 No such user")
    busy = send_transactional(runtime, "confirm", signed_up(runtime, "busy@example.com"), FORM)
    gone = send_transactional(runtime, "confirm", signed_up(runtime, "gone@example.com"), FORM)
    by_id = {row.id: row for row in rows(runtime)}
    assert by_id[busy].state == "queued" and by_id[busy].not_before > START
    assert by_id[gone].state == "failed" and "550" in by_id[gone].last_error
    with transaction(runtime.settings.database_url) as session:
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == "gone@example.com")) == "bounced"
        assert session.scalar(select(Suppression.reason)) == "hard_bounce"
    assert sink.messages == []

    assert isinstance(runtime.clock, FileClock)
    runtime.clock.advance(timedelta(hours=1))
    sent = sum(enrollment.deliver(runtime, batch).sent for batch in enrollment.tick(runtime).batches)
    assert sent == 1 and {row.id: row.state for row in rows(runtime)} == {busy: "sent", gone: "failed"}
    assert parse(sink.wait_for(1)[0])["To"] == "busy@example.com"


def test_a_bounce_report_for_a_confirmation_finds_its_row_by_message_id_and_suppresses(
    runtime: Runtime, sink: SmtpSink
) -> None:
    """A DSN that arrives later (the relay accepted the confirmation, the mailbox did not exist)
    is mapped like a drip step's: by our Message-ID, to the row and its subscriber."""
    delivery_id = send_transactional(runtime, "confirm", signed_up(runtime, "later@example.com"), FORM)
    message_id = parse(sink.wait_for(1)[0])["Message-ID"]
    event = BounceEvent("hard_bounce", "later@example.com", f"dsn:{message_id}", detail="5.1.1", message_id=message_id)
    with transaction(runtime.settings.database_url) as session:
        result = apply_bounce_events(session, [event], runtime.clock.now(), soft_limit=3)
    assert (result.applied, result.suppressed) == (1, 1)
    with transaction(runtime.settings.database_url) as session:
        assert session.scalar(select(Event.delivery_id).where(Event.kind == "hard_bounce")) == delivery_id
        assert session.scalar(select(Subscriber.status).where(Subscriber.email == "later@example.com")) == "bounced"


def test_a_confirmation_still_queued_when_the_person_confirmed_is_skipped(runtime: Runtime, sink: SmtpSink) -> None:
    subscriber_id = signed_up(runtime, "quick@example.com")
    now = runtime.clock.now()
    with transaction(runtime.settings.database_url) as session:
        delivery_id = queue_transactional(
            session, message="confirm", subscriber_id=subscriber_id, form=FORM, now=now
        )
        signup_id = session.get(Subscriber, subscriber_id).consent["signup_id"]  # type: ignore[union-attr]
        # Confirmed (from an earlier email) before this one went out.
        confirm(session, [subscriber_id, signup_id], now, ip="192.0.2.7", user_agent="t", campaign=None, keys=TEST_KEYS)
    outcome = enrollment.deliver(runtime, [delivery_id])
    assert (outcome.sent, outcome.skipped) == (0, 1)
    [row] = rows(runtime)
    assert row.state == "skipped" and row.last_error == "signup no longer waits for confirmation"
    assert sink.messages == []


def test_a_pending_confirmation_survives_the_recheck_of_a_long_batch(runtime: Runtime) -> None:
    """The mid-batch re-check skips drip steps of people who are not active; a confirmation is
    for someone not active yet and must go on."""
    subscriber_id = signed_up(runtime, "pending@example.com")
    now = runtime.clock.now()
    with transaction(runtime.settings.database_url) as session:
        delivery_id = queue_transactional(
            session, message="confirm", subscriber_id=subscriber_id, form=FORM, now=now
        )
        claimed = queries.claim_deliveries(session, [delivery_id], now, wall_now(), timedelta(minutes=5), "tok")
        assert claimed == [delivery_id]

    class Pending:
        delivery_id = 0
        subscriber_email = "pending@example.com"

    item = Pending()
    item.delivery_id = delivery_id
    with transaction(runtime.settings.database_url) as session:
        assert queries.no_longer_sendable(session.connection(), [item], token="tok") == set()


def test_an_unknown_message_is_refused_and_nothing_is_written(runtime: Runtime) -> None:
    subscriber_id = signed_up(runtime, "odd@example.com")
    refused = pytest.raises(InputError, match="message: 'welcome' is not one of confirm, manage, data-link")
    with refused, transaction(runtime.settings.database_url) as session:
        queue_transactional(
            session,
            message="welcome",  # type: ignore[arg-type]
            subscriber_id=subscriber_id,
            form=FORM,
            now=runtime.clock.now(),
        )
    assert rows(runtime) == []


def test_the_campaign_report_does_not_count_transactional_emails(runtime: Runtime, sink: SmtpSink) -> None:
    """The report's own reads (db/reports.py); `campaigns status` through the installed command
    is tested in tests/test_campaign_status.py."""
    for name in ("a", "b"):
        send_transactional(runtime, "confirm", signed_up(runtime, f"{name}@example.com"), FORM)
    assert len(sink.wait_for(2)) == 2
    report = campaign_status(runtime.settings, DRIP).document()
    assert all(v == 0 for step in report["steps"] for v in step["totals"].values()), report["steps"][0]


@pytest.mark.parametrize(
    ("broker", "choice", "in_web"),
    [
        ("", "", True),  # the newcomer's default: filesystem broker, `cadence web` alone sends it
        ("memory://", "", True),
        ("redis://127.0.0.1:6379/0", "", False),  # a shared broker: a worker sends it
        ("amqp://127.0.0.1//", "", False),
        ("redis://127.0.0.1:6379/0", "web", True),
        ("", "worker", False),
    ],
)
def test_who_sends_a_transactional_email_follows_the_broker_unless_told(
    tmp_path: Path, broker: str, choice: str, in_web: bool
) -> None:
    env = cadence_env(tmp_path, CADENCE_BROKER_URL=broker, CADENCE_TRANSACTIONAL_SEND=choice)
    assert load_settings(env).send_transactional_in_web is in_web


def test_a_bad_transactional_send_setting_is_refused_with_its_name(tmp_path: Path) -> None:
    env = cadence_env(tmp_path / "data", CADENCE_TRANSACTIONAL_SEND="sometimes")
    with pytest.raises(ConfigError, match="CADENCE_TRANSACTIONAL_SEND: 'sometimes' is not one of auto, web, worker"):
        load_settings(env)
