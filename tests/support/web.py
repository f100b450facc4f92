"""A real ``cadence web`` for tests: uvicorn in a subprocess on 127.0.0.1 and a free port, a fresh
SQLite database in a temporary data dir, a file clock, and an SMTP sink for its emails.

Usage::

    with SmtpSink() as sink, WebServer(tmp_path, sink) as web:
        httpx.get(web.url("/subscribe"))
        web.clock.advance(timedelta(days=2))
        web.drive()                      # engine.tick + engine.deliver in this process

Its broker is ``memory://``, so the server sends the transactional emails it queues (the
confirmation, the emailed links) itself, through the ledger's send path, right after each
request (``Settings.send_transactional_in_web``): a test waits for them at the SMTP sink with no
worker running. tests/test_transactional_worker.py runs the other setup (Redis and a real worker).

The server trusts ``X-Forwarded-For`` from 127.0.0.1 (``CADENCE_TRUSTED_PROXIES``, set here), so
a test can speak "from" any IP it likes: ``headers=web.from_ip("203.0.113.7")``.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import itertools
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import inspect, select, text

from cadence.clock import FileClock
from cadence.config import Settings, load_settings
from cadence.db.models import Delivery, Enrollment, Link, Subscriber
from cadence.db.session import transaction
from cadence.files.forms import load_form
from tests.support.smtpd import ReceivedMessage, SmtpSink

REPO = Path(__file__).resolve().parents[2]
# The consent wording of the default signup form (campaigns/forms/runners.yaml).
CONSENT = load_form(REPO / "campaigns" / "forms" / "runners.yaml").consent
SECRET = "test-secret-key-for-the-web-tests-0123456789"
# Tuesday 1 December 2026, 07:30 in Richmond (EST, UTC-5): inside the drip's 07:00-09:00 window.
START = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
_ips = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fresh_ip() -> str:
    """A documentation-range IPv4 address (RFC 5737) no other test used in this process."""
    n = next(_ips)
    return f"198.51.{n // 250}.{n % 250 + 1}"


class WebServer:
    """``cadence web`` in a subprocess; see the module docstring."""

    def __init__(
        self, tmp: Path, sink: SmtpSink, *, extra_env: dict[str, str] | None = None, log_level: str = "warning"
    ) -> None:
        self.tmp = tmp
        self.log_level = log_level
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        clock_file = tmp / "clock"
        self.clock = FileClock(clock_file)
        self.clock.set(START)
        self.env = {
            "CADENCE_DATA_DIR": str(tmp / "data"),
            "CADENCE_DATABASE_URL": f"sqlite:///{tmp / 'data' / 'cadence.db'}",
            "CADENCE_EMAIL_URL": f"smtp://{sink.host}:{sink.port}?tls=none",
            "CADENCE_BASE_URL": self.base_url,
            "CADENCE_SECRET_KEY": SECRET,
            "CADENCE_CLOCK": f"file:{clock_file}",
            "CADENCE_CAMPAIGNS_DIR": str(REPO / "campaigns"),
            "CADENCE_TEMPLATES_DIR": str(REPO / "templates"),
            "CADENCE_BROKER_URL": "memory://",
            "CADENCE_TRUSTED_PROXIES": "127.0.0.1",
            **(extra_env or {}),
        }
        self.settings: Settings = load_settings(self.env)
        self.sink = sink
        self._process: subprocess.Popen[bytes] | None = None
        self._runtime: Any = None

    def command(self) -> list[str]:
        script = Path(sys.executable).with_name("cadence")
        if script.exists():  # the real entry point, with the web command registered by cadence.cli
            return [str(script), "web"]
        return [sys.executable, "-m", "cadence.cli.web"]

    def start(self) -> WebServer:
        from cadence.db.migrate import upgrade

        upgrade(self.settings.database_url)
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.tmp / "web.log", "wb")  # noqa: SIM115 - closed with the process in stop()
        self._log = log
        self._process = subprocess.Popen(
            [*self.command(), "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"cadence web exited:\n{self.log()}")
            try:
                httpx.get(self.url("/subscribe"), timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"cadence web did not answer within 30 s:\n{self.log()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
            self._log.close()
        if self._runtime is not None:
            self._runtime.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log(self) -> str:
        return (self.tmp / "web.log").read_text(errors="replace")

    # --- talking to it -----------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def from_ip(ip: str | None = None) -> dict[str, str]:
        return {"X-Forwarded-For": ip or fresh_ip()}

    def client(self, ip: str | None = None) -> httpx.Client:
        """A cookie-keeping client that speaks from its own IP."""
        return httpx.Client(base_url=self.base_url, headers=self.from_ip(ip), timeout=10)

    # --- the engine, in this process -----------------------------------------------------------

    @property
    def runtime(self) -> Any:
        if self._runtime is None:
            from cadence.operations.runtime import Runtime

            self._runtime = Runtime.from_settings(self.settings)
        return self._runtime

    def drive(self) -> int:
        """One scheduler tick and the sends it queued; returns how many were sent."""
        from cadence.operations import enrollment as engine

        sent = 0
        for batch in engine.tick(self.runtime).batches:
            sent += engine.deliver(self.runtime, batch).sent
        return sent

    # --- the database --------------------------------------------------------------------------

    def subscriber(self, address: str) -> Subscriber | None:
        with transaction(self.settings.database_url) as session:
            found: Subscriber | None = session.scalar(
                select(Subscriber).where(Subscriber.email_key == address.lower())
            )
            return found

    def dump(self) -> str:
        """Every row of every table as text (for "no trace left" checks)."""
        lines = []
        with transaction(self.settings.database_url) as session:
            for table in inspect(session.get_bind()).get_table_names():
                for row in session.execute(text(f'SELECT * FROM "{table}"')):
                    lines.append(f"{table}: {tuple(row)!r}")
        return "\n".join(lines)

    def add_delivery(
        self, address: str, *, campaign: str = "lower-back-pain", segment: str = "trail+no-race", url: str | None = None
    ) -> tuple[int, int, int | None]:
        """An active subscriber with one sent delivery (and a stored Link for `url`):
        ``(subscriber_id, delivery_id, link_id)``."""
        now = self.clock.now()
        with transaction(self.settings.database_url) as session:
            subscriber = Subscriber(
                email=address, email_key=address.lower(), first_name="", attributes={"terrain": "trails"},
                status="active", source="test", created_at=now, updated_at=now, confirmed_at=now,
                soft_bounces=0, consent={},
            )
            session.add(subscriber)
            session.flush()
            enrollment = Enrollment(
                subscriber_id=subscriber.id, campaign_id=campaign, state="active", next_step=1,
                enrolled_at=now, end_reason="",
            )
            session.add(enrollment)
            session.flush()
            delivery = Delivery(
                enrollment_id=enrollment.id, subscriber_id=subscriber.id, campaign_id=campaign,
                step_id="why-it-hurts", step_index=0, segment_id=segment, state="sent", attempts=1,
                due_at=now, not_before=now, message_id="", content_hash="", last_error="",
                created_at=now, sent_at=now,
            )
            session.add(delivery)
            session.flush()
            link_id = None
            if url is not None:
                digest = hashlib.sha256(url.encode()).hexdigest()
                link_id = session.scalar(select(Link.id).where(Link.url_hash == digest))
                if link_id is None:
                    link = Link(url=url, url_hash=digest)
                    session.add(link)
                    session.flush()
                    link_id = link.id
            return subscriber.id, delivery.id, link_id


# --- emails --------------------------------------------------------------------------------------

def parse(received: ReceivedMessage) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    content: str = part.get_content()  # type: ignore[attr-defined]
    return content


def find_url(message: EmailMessage, path: str) -> str:
    """The first absolute URL in the HTML (or text) part whose path starts with `path`."""
    for subtype in ("html", "plain"):
        try:
            content = body(message, subtype)
        except AssertionError:
            continue
        match = re.search(r"https?://[^\s\"'<>]+" + re.escape(path) + r"[^\s\"'<>]+", content)
        if match:
            return match.group(0).replace("&amp;", "&")
    raise AssertionError(f"no {path} link in the message")


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


def signup_form(**fields: str) -> dict[str, str]:
    return {
        "email": "runner@example.com",
        "first_name": "",
        "terrain": "trails",
        "training_for_race": "no",
        "race_month": "",
        **fields,
    }


def subscribe_and_confirm(web: WebServer, web_sink: SmtpSink, address: str, first_name: str = "Robin") -> str:
    """Sign up through the form, confirm, receive step 1; returns the preferences URL path."""
    client = web.client()
    token = csrf_token(client.get("/subscribe").text)
    before = len(web_sink.messages)
    client.post("/subscribe", data={"csrf_token": token, **signup_form(email=address, first_name=first_name)})
    confirm_url = find_url(parse(web_sink.wait_for(before + 1)[-1]), "/confirm/").removeprefix(web.base_url)
    page = client.get(confirm_url)
    client.post(confirm_url, data={"csrf_token": csrf_token(page.text)}).raise_for_status()
    assert web.drive() == 1
    email = parse(web_sink.wait_for(before + 2)[-1])
    return find_url(email, "/p/").removeprefix(web.base_url)


def data_link(web: WebServer, web_sink: SmtpSink, client: httpx.Client, preferences: str) -> str:
    """Ask the preference page for a data link; returns its path (``/d/<token>``) from the email."""
    before = len(web_sink.messages)
    token = csrf_token(client.get(preferences).text)
    asked = client.post(f"{preferences}/data-link", data={"csrf_token": token})
    assert asked.status_code == 303 and asked.headers["location"].endswith("?done=data-link")
    return find_url(parse(web_sink.wait_for(before + 1)[-1]), "/d/").removeprefix(web.base_url)
