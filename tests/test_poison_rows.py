"""A delivery on which the worker keeps stopping (a poison row) is given up after
``max_attempts``, without taking its batch with it and without sending anything twice.

Two ways a worker stops on a row: our own code raises something that is not a CadenceError
while building that one email (here a template that, for one subscriber's attribute value,
renders a lone surrogate, on which building the MIME message raises UnicodeEncodeError), and
the worker process dies while it holds the lease (a kill, a deploy). Real SMTP (aiosmtpd),
real SQLite and PostgreSQL; the business clock is a FileClock moved forward, never a sleep.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.db import queries
from cadence.db.models import Delivery, Enrollment, Subscriber
from cadence.db.session import transaction
from cadence.operations import enrollment as engine
from cadence.operations.runtime import Runtime
from tests.support.cluster import ROOT
from tests.support.smtpd import SmtpSink
from tests.test_send_path import add_people, make_runtime, sink, states

__all__ = ["sink"]  # the fixture, shared with test_send_path

MAX_ATTEMPTS = 3


def _advance(runtime: Runtime, minutes: int = 5) -> None:
    clock = runtime.clock
    assert isinstance(clock, FileClock)
    clock.set(clock.now() + timedelta(minutes=minutes))


def _row(runtime: Runtime, delivery_id: int) -> Delivery:
    with transaction(runtime.settings.database_url) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        session.expunge(row)
        return row


def _poison_template(tmp_path: Path) -> Path:
    """The shipped templates, with a greeting that renders a lone surrogate (a Jinja string
    escape) for the subscribers whose ``km`` answer is "ten": rendering succeeds, building the
    message raises (not a CadenceError)."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    base = templates / "_shared" / "base.mjml"
    greeting = 'Hi [[ subscriber.first_name or "there" ]],'
    assert greeting in base.read_text()
    poison = '[% if subscriber.attributes.km == "ten" %][[ "\\udcff" ]][% endif %]'
    base.write_text(base.read_text().replace(greeting, greeting + poison))
    return templates


def test_an_email_our_code_cannot_build_is_let_go_at_once_and_given_up_after_max_attempts(
    tmp_path: Path, database_url: str, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    templates = _poison_template(tmp_path)
    runtime = make_runtime(
        tmp_path,
        database_url,
        sink,
        CADENCE_TEMPLATES_DIR=str(templates),
        CADENCE_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    ids = add_people(runtime, 5)
    with transaction(runtime.settings.database_url) as session:
        for i, subscriber_id in enumerate(ids):
            person = session.get_one(Subscriber, subscriber_id)
            person.attributes = {**person.attributes, "km": "ten" if i == 1 else str(i)}
    [batch] = engine.tick(runtime).batches
    with transaction(runtime.settings.database_url) as session:
        poison_id = session.scalars(select(Delivery.id).where(Delivery.subscriber_id == ids[1])).one()

    caplog.set_level(logging.ERROR, logger="cadence")
    outcome = engine.deliver(runtime, batch)
    # The rest of the batch went out in the same task; the poison row was let go at once (not
    # after lease_seconds), keeping the attempt its claim counted, back in the queue after the
    # backoff of a refused email (drip_policy.retry_at): a fault that hits every email spends
    # its retries over hours, not one per tick.
    assert (outcome.sent, outcome.retrying, outcome.failed) == (4, 1, 0)
    sink.wait_for(4)
    row = _row(runtime, poison_id)
    assert row.state == "queued" and row.attempts == 1 and row.enqueued_at is None and row.lease_expires_at is None
    assert row.not_before > runtime.clock.now()
    assert engine.tick(runtime).batches == []  # not before its backoff
    assert row.last_error.startswith("worker error: UnicodeEncodeError"), row.last_error
    logged = [r for r in caplog.records if "unexpected error while sending" in r.getMessage()]
    assert len(logged) == 1 and getattr(logged[0], "delivery_ids", None) == [poison_id]
    assert "@example.com" not in logged[0].getMessage()

    # Each tick hands it out again, each claim counts an attempt ...
    for attempt in range(2, MAX_ATTEMPTS + 1):
        _advance(runtime)  # 5 minutes: past the backoff of attempts 1 and 2 (at most 1 and 2 minutes)
        batches = engine.tick(runtime).batches
        assert [i for b in batches for i in b] == [poison_id]
        outcome = engine.deliver(runtime, batches[0])
        assert (outcome.sent, outcome.retrying) == (0, 1)
        assert _row(runtime, poison_id).attempts == attempt
    # ... until it has stopped the worker max_attempts times: given up, the series goes on.
    _advance(runtime)
    [batch] = engine.tick(runtime).batches
    outcome = engine.deliver(runtime, batch)
    assert (outcome.sent, outcome.failed) == (0, 1)
    row = _row(runtime, poison_id)
    assert row.state == "failed" and row.lease_expires_at is None
    assert row.last_error == f"gave up: the worker stopped {MAX_ATTEMPTS} times while sending this"
    with transaction(runtime.settings.database_url) as session:
        enrollment = session.scalars(select(Enrollment).where(Enrollment.subscriber_id == ids[1])).one()
        assert enrollment.state == "active" and enrollment.next_step == 1 and enrollment.next_send_at is not None
    assert states(runtime) == {"sent": 4, "failed": 1}
    _advance(runtime)
    assert engine.tick(runtime).batches == []  # nothing left to hand out
    received = Counter(r for m in sink.messages for r in m.rcpt_tos)
    assert sorted(received) == [f"p{i}@example.com" for i in (0, 2, 3, 4)]
    assert set(received.values()) == {1}, "nothing is sent twice"


def test_a_killed_worker_costs_its_rows_one_attempt_not_the_email(
    tmp_path: Path, database_url: str, sink: SmtpSink
) -> None:
    """A worker killed while it holds a batch (a deploy): the re-claim after the lease ran out
    counts an attempt and sends. Killed on the same row max_attempts times: given up."""
    runtime = make_runtime(tmp_path, database_url, sink, CADENCE_MAX_ATTEMPTS=str(MAX_ATTEMPTS))
    add_people(runtime, 2)
    [batch] = engine.tick(runtime).batches
    first, second = sorted(batch)

    def killed_holding(ids: list[int]) -> None:
        """A worker claims `ids` and dies before sending: its lease (zero long here, instead of
        waiting lease_seconds) runs out with the rows still ``sending``."""
        with transaction(runtime.settings.database_url) as session:
            got = queries.claim_deliveries(
                session, ids, runtime.clock.now(), datetime.now(UTC), timedelta(0), "killed"
            )
        assert got == sorted(ids)

    killed_holding([first, second])  # the deploy: both rows' worker killed once
    for _ in range(MAX_ATTEMPTS - 1):
        killed_holding([second])  # ... and the second one's every time after
    # The tick hands them out again one lease after it enqueued them (wall time, covered by
    # test_worker_crash.py); here the send task comes straight back.
    outcome = engine.deliver(runtime, [first, second])
    assert (outcome.sent, outcome.failed) == (1, 1)
    sink.wait_for(1)
    sent, given_up = _row(runtime, first), _row(runtime, second)
    assert sent.state == "sent" and sent.attempts == 2
    with transaction(runtime.settings.database_url) as session:
        address = session.get_one(Subscriber, sent.subscriber_id).email
    assert [r for m in sink.messages for r in m.rcpt_tos] == [address]
    assert given_up.state == "failed"
    assert given_up.last_error == f"gave up: the worker stopped {MAX_ATTEMPTS} times while sending this"
    assert engine.deliver(runtime, [first, second]).sent == 0  # a redelivered task: nothing again


def test_a_dkim_key_file_gone_unreadable_lets_the_batch_go_at_once_and_it_is_sent_when_back(
    tmp_path: Path, database_url: str, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    """The DKIM key was readable when the worker started (settings check it) and is not when
    the first email is signed (replaced by a directory here: unreadable even for root). Every
    email of the batch is let go at once, logged once with their ids; the key back, the next
    tick sends them, each with one attempt more."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = tmp_path / "dkim.pem"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    runtime = make_runtime(
        tmp_path,
        database_url,
        sink,
        CADENCE_DKIM_KEY_FILE=str(key),
        CADENCE_DKIM_SELECTOR="s1",
        CADENCE_DKIM_DOMAIN="example.com",
        CADENCE_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    add_people(runtime, 3)
    [batch] = engine.tick(runtime).batches
    pem = key.read_bytes()
    key.unlink()
    key.mkdir()
    caplog.set_level(logging.ERROR, logger="cadence")
    outcome = engine.deliver(runtime, batch)
    assert (outcome.sent, outcome.retrying) == (0, 3)
    assert sink.messages == []
    logged = [r for r in caplog.records if "unexpected error while sending" in r.getMessage()]
    assert len(logged) == 1 and sorted(getattr(logged[0], "delivery_ids", [])) == sorted(batch)
    for delivery_id in batch:
        row = _row(runtime, delivery_id)
        # Back in the queue after a refused email's backoff: a broken key spends the retries
        # over hours, which leaves time to fix it before any email is given up.
        assert row.state == "queued" and row.enqueued_at is None and row.attempts == 1
        assert row.lease_expires_at is None and row.not_before > runtime.clock.now()
        assert row.last_error.startswith("worker error: IsADirectoryError"), row.last_error

    key.rmdir()
    key.write_bytes(pem)
    _advance(runtime)
    batches = engine.tick(runtime).batches
    assert sorted(i for b in batches for i in b) == sorted(batch)
    assert sum(engine.deliver(runtime, b).sent for b in batches) == 3
    sink.wait_for(3)
    assert all(b"DKIM-Signature:" in m.data for m in sink.messages)
    assert {_row(runtime, i).attempts for i in batch} == {2}
    assert states(runtime) == {"sent": 3}
