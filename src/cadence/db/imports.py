"""The SQL of a subscriber import: a few statements per chunk of rows, whatever its size.

Per chunk: one SELECT of the suppressions among its addresses, one SELECT of the subscribers
that exist, the new ones inserted (PostgreSQL: COPY into a temporary table and one
INSERT ... SELECT; SQLite: an executemany) and one executemany UPDATE of the changed ones.
ON CONFLICT DO NOTHING: a subscriber who signs up on the web between the SELECT and the INSERT
keeps their own row (and their consent record) rather than failing the whole import.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cadence.db.models import Subscriber, SubscriberTopic, Suppression
from cadence.db.queries import one_of

_SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]  # Core statements: no ORM bookkeeping


@dataclass(frozen=True)
class StoredSubscriber:
    id: int
    first_name: str
    timezone: str | None
    attributes: dict[str, Any]


def suppressed_hashes(session: Session, hashes: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Which of `hashes` (plain or keyed digests of lowercased addresses) are on the suppression
    list, each with its row's (hash_version, reason)."""
    if not hashes:
        return {}
    dialect = session.get_bind().dialect.name
    query = select(Suppression.email_hash, Suppression.hash_version, Suppression.reason).where(
        one_of(Suppression.email_hash, hashes, dialect)
    )
    return {digest: (version, reason) for digest, version, reason in session.execute(query)}


def existing_subscribers(session: Session, keys: Sequence[str]) -> dict[str, StoredSubscriber]:
    """The stored subscribers among `keys` (lowercased addresses), by key."""
    if not keys:
        return {}
    rows = session.execute(
        select(
            Subscriber.email_key, Subscriber.id, Subscriber.first_name, Subscriber.timezone, Subscriber.attributes
        ).where(one_of(Subscriber.email_key, keys, session.get_bind().dialect.name))
    )
    return {key: StoredSubscriber(id_, first, tz, dict(attrs or {})) for key, id_, first, tz, attrs in rows}


def insert_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new subscribers (column → value dicts, every column of NEW_COLUMNS); an address
    that appeared meanwhile is left as it is."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        _insert_by_copy(session, rows)
        return
    statement = sqlite_insert(_SUBSCRIBERS).on_conflict_do_nothing(index_elements=["email_key"])
    session.execute(statement, list(rows))  # SQLite: executemany is in-process, no round trips


NEW_COLUMNS = (
    "email", "email_key", "first_name", "timezone", "attributes", "status", "source",
    "created_at", "updated_at", "confirmed_at", "soft_bounces", "consent",
)  # fmt: skip

# PostgreSQL: COPY the chunk into a temporary table, then one INSERT ... SELECT ... ON CONFLICT.
# An executemany of INSERTs (psycopg's pipeline) cost ~75 µs a row, a 1,000-row VALUES list
# ~400 ms a chunk to compile in SQLAlchemy; COPY moves rows at ~150,000/s (bench/import.py).
_CREATE_STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS import_staging (
    email text, email_key text, first_name text, timezone text, attributes json, status text,
    source text, created_at timestamp, updated_at timestamp, confirmed_at timestamp,
    soft_bounces integer, consent json
) ON COMMIT DROP
"""
_COLUMN_LIST = ", ".join(NEW_COLUMNS)


def _insert_by_copy(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    connection = session.connection()
    connection.exec_driver_sql(_CREATE_STAGING)
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY import_staging ({_COLUMN_LIST}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(_copy_value(row[name]) for name in NEW_COLUMNS))
    finally:
        cursor.close()
    connection.exec_driver_sql(
        f"INSERT INTO subscribers ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM import_staging "
        "ON CONFLICT (email_key) DO NOTHING"
    )
    connection.exec_driver_sql("TRUNCATE import_staging")


def _copy_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, datetime):
        return _naive_utc(value)
    return json.dumps(value)  # attributes, consent


@functools.lru_cache(maxsize=64)
def _naive_utc(value: datetime) -> datetime:
    # Stored as naive UTC, as models.UTCDateTime does; a chunk shares one `now`, hence the cache.
    return value.astimezone(UTC).replace(tzinfo=None)


def update_subscribers(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Update subscribers by primary key: one executemany (each dict has ``id`` and the same
    columns to set)."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "id"]
    statement = (
        update(_SUBSCRIBERS)
        .where(_SUBSCRIBERS.c.id == bindparam("row_id"))
        .values({name: bindparam(f"new_{name}") for name in columns})
    )
    session.execute(statement, [{"row_id": row["id"], **{f"new_{n}": row[n] for n in columns}} for row in rows])


def add_topics(session: Session, subscriber_ids: Sequence[int], topic: str, now: datetime, source: str) -> int:
    """Put each subscriber on newsletter `topic` (``subscribers import --topic``), leaving the
    ones already on it as they are: when they first agreed, and how, is the consent record
    (GDPR Art. 7(1)). Returns the rows added."""
    if not subscriber_ids:
        return 0
    have = set(
        session.scalars(
            select(SubscriberTopic.subscriber_id).where(
                SubscriberTopic.topic == topic, SubscriberTopic.subscriber_id.in_(list(subscriber_ids))
            )
        )
    )
    new = [
        SubscriberTopic(subscriber_id=i, topic=topic, joined_at=now, source=source)
        for i in dict.fromkeys(subscriber_ids)
        if i not in have
    ]
    session.add_all(new)
    session.flush()
    return len(new)
