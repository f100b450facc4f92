"""The SQL of ``cadence demo``: its fictional runners found, counted apart from everyone else, and
removed before a fresh run (cadence.operations.demo decides when).

Why by ``email_key``: the demo knows its runners only by address, and ``email_key`` is UNIQUE, so
each statement is one index lookup per runner (~30), whatever the size of the list around them.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from cadence.db.models import Subscriber
from cadence.db.session import engine_for, transaction

__all__ = ["count_others", "delete_runners", "runners"]


def runners(session: Session, keys: Collection[str]) -> list[Subscriber]:
    """The subscribers whose ``email_key`` is one of `keys`."""
    return list(session.scalars(select(Subscriber).where(Subscriber.email_key.in_(list(keys)))))


def count_others(database_url: str, keys: Collection[str]) -> int:
    """How many subscribers are not among `keys`; 0 if the schema is not there yet (a database
    with no tables has nothing to lose). Its own transaction, so the failed read of a missing
    table is rolled back on its own; the engine is disposed after, as the demo may delete the
    SQLite file next."""
    query = select(func.count()).select_from(Subscriber).where(Subscriber.email_key.not_in(list(keys)))
    try:
        with transaction(database_url) as session:
            return int(session.scalar(query) or 0)
    except DBAPIError:
        return 0
    finally:
        engine_for(database_url).dispose()


def delete_runners(session: Session, keys: Collection[str]) -> None:
    """Remove the subscribers under `keys`; their enrollments, deliveries and events go with them
    (ON DELETE CASCADE)."""
    session.execute(delete(Subscriber).where(Subscriber.email_key.in_(list(keys))))
