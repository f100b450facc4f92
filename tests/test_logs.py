"""``CADENCE_LOG_FORMAT=json``: a real worker's and a real ``cadence web``'s logs are one JSON
object per line, carry ids, and never an email address or a link's token."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.core.tokens import make_token
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery
from cadence.db.session import transaction
from cadence.monitoring.logs import redact
from tests.support.cluster import cadence_env, enrolled_runners, processes
from tests.support.smtpd import SmtpSink
from tests.support.web import CONSENT, WebServer

pytestmark = pytest.mark.slow
N = 4


# Celery writes its shutdown notice straight to stderr from the signal handler (signal-safe,
# celery.apps.worker.safe_say), not through logging: the one plain line (docs/operations.md).
CELERY_SHUTDOWN_NOTICE = "worker: Warm shutdown (MainProcess)"


def json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip() and line != CELERY_SHUTDOWN_NOTICE]
    assert lines, "no log lines at all"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_a_worker_logs_json_lines_with_ids_and_no_addresses_or_tokens(tmp_path: Path, redis_url: str) -> None:
    with SmtpSink() as sink, processes(tmp_path / "logs") as procs:
        # A refusal that quotes the address, as real servers do, travels into the ledger and logs.
        sink.reply("r1@example.com", "550 5.1.1 <r1@example.com>: Recipient address rejected")
        clock = FileClock(tmp_path / "clock")
        clock.set(datetime(2026, 12, 7, 12, 30, tzinfo=UTC))
        env = cadence_env(
            tmp_path / "data",
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_LOG_FORMAT="json",
        )
        settings = enrolled_runners(env, N, clock.now(), prefix="r")
        procs.worker(env, concurrency=1)
        procs.scheduler(env)
        sink.wait_for(N - 1, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with transaction(settings.database_url) as session:
                done = session.scalar(select(func.count()).where(Delivery.state.in_(("sent", "failed"))))
                pairs = list(session.execute(select(Delivery.subscriber_id, Delivery.id)))
            if done == N:
                break
            time.sleep(0.2)
        assert done == N
        time.sleep(0.5)  # the batch's log line follows its last commit
        procs.stop_all()
        worker_log = (tmp_path / "logs" / "worker.log").read_text()
        scheduler_log = (tmp_path / "logs" / "scheduler.log").read_text()

    assert any("beat: Starting" in str(line["message"]) for line in json_lines(scheduler_log))
    lines = json_lines(worker_log)
    assert {"ts", "level", "logger", "message"} <= set(lines[0])
    batches = [line for line in lines if line["logger"] == "cadence.operations.enrollment"]
    logged_ids = sorted(i for line in batches for i in line["delivery_ids"])  # type: ignore[attr-defined]
    assert logged_ids == sorted(d for _, d in pairs)
    assert "@example.com" not in worker_log
    for subscriber_id, delivery_id in pairs:
        assert make_token(settings.secret_key, "unsubscribe", [subscriber_id, delivery_id]) not in worker_log
        assert make_token(settings.secret_key, "webview", delivery_id) not in worker_log


def test_the_web_app_logs_json_lines_without_addresses_or_tokens(tmp_path: Path) -> None:
    with SmtpSink() as sink, processes(tmp_path / "logs") as procs:
        server = WebServer(tmp_path, sink, extra_env={"CADENCE_LOG_FORMAT": "json"})
        upgrade(server.settings.database_url)
        subscriber_id, delivery_id, _ = server.add_delivery("logged.runner@example.com")
        unsubscribe = make_token(server.settings.secret_key, "unsubscribe", [subscriber_id, delivery_id])
        preferences = make_token(server.settings.secret_key, "preferences", subscriber_id)
        env = {**os.environ, **server.env}
        procs.start("web", ["web", "--port", str(server.port), "--log-level", "info"], env)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(server.url("/healthz"), timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert httpx.get(server.url(f"/u/{unsubscribe}")).status_code == 200
        assert httpx.get(server.url(f"/p/{preferences}")).status_code == 200
        assert httpx.get(server.url(f"/api/preferences/{preferences}")).status_code == 200
        signup = {
            "email": "new.runner@example.com",
            "terrain": "trails",
            "training_for_race": False,
            "consent_version": CONSENT.version,
        }
        assert httpx.post(server.url("/api/subscribe"), json=signup).status_code == 202
        sink.wait_for(1)
        procs.stop_all()
        web_log = (tmp_path / "logs" / "web.log").read_text()

    lines = json_lines(web_log)
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"GET /u/<token> HTTP/1.1" 200' in str(m) for m in access), access
    assert any("/api/preferences/<token>" in str(m) for m in access), access
    assert unsubscribe not in web_log and preferences not in web_log
    assert "@example.com" not in web_log


def test_redaction_keeps_the_shape_of_what_was_logged() -> None:
    assert redact("550 5.1.1 <Ann.Lee+x@mail.example.org>: no such user") == "550 5.1.1 <<email>>: no such user"
    assert redact('"GET /c/12/3/AbC-d_9 HTTP/1.1" 302') == '"GET /c/12/3/<signature> HTTP/1.1" 302'
    assert redact("GET /o/12/x1Y2.gif") == "GET /o/12/<signature>"
    assert redact("POST /p/12-3.sig/answers") == "POST /p/<token>/answers"
    assert redact("celery@worker1 ready") == "celery@worker1 ready"
