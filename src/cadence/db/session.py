"""Engines and sessions. SQLite gets WAL and a busy timeout so a worker, the scheduler and the
web app can share one file; PostgreSQL gets a pool sized for a worker process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

# What a check catches when the database fails (refused, missing table, timeout...): monitoring
# and the doors name it from here instead of importing SQLAlchemy themselves.
DatabaseError = SQLAlchemyError


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_setup(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's implicit BEGIN would fight our BEGIN IMMEDIATE below (SQLAlchemy docs,
        # "Serializable isolation / Savepoints / Transactional DDL" for pysqlite).
        dbapi_conn.isolation_level = None
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # Take the write lock at BEGIN, so a transaction that reads then writes cannot fail
        # with "database is locked" halfway through (SQLite docs, "BEGIN IMMEDIATE").
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def display_url(url: str) -> str:
    """`url` as it may be printed: the password replaced by ``***`` (SQLAlchemy's own rendering)."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL, resolved; None for another database or ``:memory:``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine (and pool) per URL per process."""
    return make_engine(url)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """A session in a transaction: committed on success, rolled back on error."""
    with session_factory(url)() as session, session.begin():
        yield session


def database_problem(exc: BaseException) -> str | None:
    """A database error in words a user can act on (the CLI's one line), or None if `exc` is not
    one. Here because knowing SQLSTATEs and SQLite's messages is the database adapter's job."""
    if not isinstance(exc, DBAPIError):
        return None
    original = exc.orig
    sqlstate = getattr(original, "sqlstate", None)  # psycopg 3
    text = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    # SQLite words these in its messages; PostgreSQL gives SQLSTATE 42P01 / 42703.
    if sqlstate == "42P01" or text.startswith("no such table"):
        return "the database is not initialised: run `cadence db upgrade`"
    if sqlstate == "42703" or text.startswith("no such column") or "has no column named" in text:
        return "the database schema is older than this Cadence: run `cadence db upgrade`"
    cannot_connect = (sqlstate or "").startswith("08") or (sqlstate is None and "connect" in text.lower())
    if exc.connection_invalidated or cannot_connect or text.startswith("unable to open database file"):
        return f"cannot reach the database of CADENCE_DATABASE_URL: {text}"
    return f"database error: {text}"
