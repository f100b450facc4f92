"""Subscriber import: validated as a whole, all or nothing, errors name the line and field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cadence.core.subscriber_csv import parse_subscriber_csv
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.errors import InputError
from cadence.operations.subscribers import import_subscribers, suppress, unsubscribe
from tests.support.keys import TEST_KEYS

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade(url)
    return url


def test_a_good_csv_imports_with_attributes_and_zones(db: str) -> None:
    rows = parse_subscriber_csv(
        "email,first_name,timezone,terrain\nA@Example.com,Ann,Europe/London,trails\nb@example.com,,,roads\n"
    )
    with transaction(db) as session:
        result = import_subscribers(session, rows, NOW, keys=TEST_KEYS)
    assert (result.created, result.updated) == (2, 0)
    with transaction(db) as session:
        ann = session.scalar(select(Subscriber).where(Subscriber.email_key == "a@example.com"))
        assert ann is not None and ann.attributes == {"terrain": "trails"} and ann.timezone == "Europe/London"


def test_every_bad_row_is_reported_by_line_and_nothing_is_written(db: str) -> None:
    text = (
        "email,first_name,timezone,terrain\n"
        "ok@example.com,Ok,,roads\n"
        "not-an-email,X,,roads\n"
        "tz@example.com,T,Mars/Base,roads\n"
        "ok@example.com,Again,,roads\n"
        "extra@example.com,E,,roads,surplus\n"
    )
    with pytest.raises(InputError) as err:
        parse_subscriber_csv(text, "people.csv")
    message = str(err.value)
    assert "people.csv: line 3: email: 'not-an-email' is not a valid email address" in message
    assert "people.csv: line 4: timezone: 'Mars/Base' is not an IANA time zone" in message
    assert "people.csv: line 5: email: ok@example.com already on line 2" in message
    assert "people.csv: line 6: more fields than the header has" in message
    with transaction(db) as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0


def test_a_csv_without_an_email_column_is_refused() -> None:
    with pytest.raises(InputError, match="line 1: the header must have an 'email' column"):
        parse_subscriber_csv("name,tz\nx,y\n", "f.csv")


def test_line_breaks_in_names_are_refused() -> None:
    with pytest.raises(InputError, match="line 2: first_name: contains a line break"):
        parse_subscriber_csv('email,first_name\na@example.com,"Eve\r\nBcc: x@evil.test"\n', "f.csv")


def test_reimport_never_resubscribes_and_suppressed_addresses_stay_out(db: str) -> None:
    rows = parse_subscriber_csv("email\nleft@example.com\nbounced@example.com\n")
    with transaction(db) as session:
        import_subscribers(session, rows, NOW, keys=TEST_KEYS)
    with transaction(db) as session:
        left = session.scalar(select(Subscriber).where(Subscriber.email_key == "left@example.com"))
        assert left is not None
        unsubscribe(session, left, NOW, "test")
        suppress(session, "Bounced@Example.com", "hard_bounce", NOW)
        session.execute(Subscriber.__table__.delete().where(Subscriber.email_key == "bounced@example.com"))
    with transaction(db) as session:
        result = import_subscribers(session, rows, NOW, keys=TEST_KEYS)
    assert (result.suppressed, result.updated, result.unchanged) == (1, 0, 1)  # nothing new: unchanged
    with transaction(db) as session:
        statuses = dict(session.execute(select(Subscriber.email_key, Subscriber.status)).all())
    assert statuses == {"left@example.com": "unsubscribed"}


def test_addresses_and_names_we_could_never_send_to_are_refused_at_import() -> None:
    text = "email,first_name\njosé@example.com,José\nbob@example.com,Bob\x0bX\nok@example.com,Ann\u2028Smith\n"
    with pytest.raises(InputError) as err:
        parse_subscriber_csv(text, "f.csv")
    message = str(err.value)
    assert "line 2: email: non-ASCII local part" in message
    assert "line 3: first_name: contains CR, LF, NUL or another control character" in message
    assert "line 4: first_name:" in message
