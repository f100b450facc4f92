from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import postgres_database, redis_database, unavailable
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis:// URL to a database number of this run's own (flushed before and after)."""
    with redis_database() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A postgresql+psycopg:// URL to a database created for this run (dropped afterwards)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs twice: on a SQLite file of its own and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cadence.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="module")
def web_sink() -> Iterator[SmtpSink]:
    """The SMTP server behind ``web``: one per test module, shared by its tests."""
    with SmtpSink() as server:
        yield server


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_sink: SmtpSink) -> Iterator[WebServer]:
    """``cadence web`` in a subprocess (tests/support/web.py), one per test module."""
    with WebServer(tmp_path_factory.mktemp("web"), web_sink) as server:
        yield server



@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's, /usr/bin/chromium) for the console and page tests of
    one module; a module that needs other launch options defines its own."""
    from playwright.sync_api import sync_playwright

    from tests.support.console import CHROMIUM, CHROMIUM_ARGS  # (imports the web app: only here)

    if not CHROMIUM.exists():
        unavailable("Chromium at /usr/bin/chromium", "apt-get install chromium")

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
