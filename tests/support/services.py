"""Real services for tests: Redis, PostgreSQL. Each test run gets its own Redis db number and its
own PostgreSQL database, both cleaned up. Under CI=true an unreachable service fails the test;
elsewhere it skips with a message naming what to install or start."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest

REDIS_HOST = os.environ.get("CADENCE_TEST_REDIS", "redis://127.0.0.1:6379")
PG_ADMIN_URL = os.environ.get("CADENCE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(what: str, hint: str) -> None:
    """Fail under CI (a service the suite needs is missing), skip elsewhere."""
    message = f"{what} is not reachable: {hint}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def redis_database() -> Iterator[str]:
    """Yield a redis:// URL to a db number no other run is using; flush it afterwards."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_HOST + "/0", socket_connect_timeout=2) as probe:
            probe.ping()
    except Exception:
        unavailable("Redis at " + REDIS_HOST, "start redis-server on 127.0.0.1:6379 (apt-get install redis-server)")
        raise
    try:
        with claimed_redis_db(range(1, 16)) as url:
            yield url
    except AllClaimed as exc:
        pytest.fail(str(exc))


class AllClaimed(Exception):
    pass


@contextmanager
def claimed_redis_db(numbers: Iterable[int], owner: str = "test", host: str = REDIS_HOST) -> Iterator[str]:
    """The first of `numbers` (Redis db numbers on `host`) no other test run or benchmark holds,
    claimed with SETNX on db 0 (an hour at most), flushed before and after, released at the end."""
    import redis

    admin = redis.Redis.from_url(host + "/0", socket_connect_timeout=2)
    token = f"{owner}-{uuid.uuid4().hex}"
    for number in numbers:
        if admin.set(f"cadence-test-db:{number}", token, nx=True, ex=3600):
            break
    else:
        admin.close()
        raise AllClaimed("all Redis db numbers 1..15 are claimed by other test runs; try again later")
    url = f"{host}/{number}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()
        if admin.get(f"cadence-test-db:{number}") == token.encode():
            admin.delete(f"cadence-test-db:{number}")
        admin.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database for this run; drop it afterwards."""
    import sqlalchemy as sa

    name = "cadence_test_" + uuid.uuid4().hex[:12]
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        unavailable(
            "PostgreSQL at " + PG_ADMIN_URL,
            f"start it (pg_ctlcluster ... main start) or apt-get install postgresql ({exc.__class__.__name__})",
        )
        raise
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()
