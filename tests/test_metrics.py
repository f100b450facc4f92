"""Prometheus metrics from a real worker (prefork, multiprocess mode) and a real ``cadence web``,
scraped over HTTP: counters of what the worker did, gauges of what waits in the database."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from cadence.clock import FileClock
from cadence.db.migrate import upgrade
from cadence.db.session import engine_for
from cadence.db.stats import pending_work
from tests.support.cluster import cadence_env, enrolled_runners, processes
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink
from tests.support.web import WebServer, free_port

pytestmark = pytest.mark.slow
N = 6  # recipients; one of them gets a 451 (retrying)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: {(name, sorted labels): value}."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for(
    url: str, condition: str, check: object, timeout: float = 60.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    deadline = time.monotonic() + timeout
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(url)
        except httpx.HTTPError:
            samples = {}
        if samples and check(samples):  # type: ignore[operator]
            return samples
        time.sleep(0.2)
    pytest.fail(f"{url}: {condition} not seen within {timeout} s; last scrape: {samples}")


def test_a_worker_and_the_web_app_expose_what_happened_over_http(tmp_path: Path, redis_url: str) -> None:
    worker_port, web_port = free_port(), free_port()
    with postgres_database() as database_url, SmtpSink() as sink, processes(tmp_path / "logs") as procs:
        sink.reply("r0@example.com", "451 4.7.1 Try again later")
        clock = FileClock(tmp_path / "clock")
        clock.set(datetime(2026, 12, 7, 12, 30, tzinfo=UTC))  # inside the New York send window
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none&rate=1000/s",
            CADENCE_CLOCK=str(clock),
            CADENCE_BASE_URL=f"http://127.0.0.1:{web_port}",
            CADENCE_METRICS_PORT=str(worker_port),
            CADENCE_METRICS_HOST="127.0.0.1",
        )
        enrolled_runners(env, N, clock.now(), prefix="r")

        web = procs.start("web", ["web", "--port", str(web_port), "--log-level", "warning"], env)
        web_metrics = f"http://127.0.0.1:{web_port}/metrics"
        before = wait_for(web_metrics, "the web app", lambda s: True)
        assert before[("cadence_enrollments_due", ())] == N
        assert before[("cadence_deliveries_queued", ())] == 0
        assert before[("cadence_database_up", ())] == 1

        worker = procs.worker(env)
        procs.scheduler(env)
        sink.wait_for(N - 1, timeout=60)
        sent = ("cadence_sends_total", (("outcome", "sent"), ("transport", "smtp")))
        retrying = ("cadence_sends_total", (("outcome", "retrying"), ("transport", "smtp")))
        after = wait_for(
            f"http://127.0.0.1:{worker_port}/metrics",
            "N-1 sent and 1 retrying",
            lambda s: s.get(sent) == N - 1 and s.get(retrying) == 1,
        )
        # One observation per message that went to the transport, the refused one included.
        assert after[("cadence_send_seconds_count", (("transport", "smtp"),))] == N
        assert after[("cadence_tick_seconds_count", ())] >= 1
        assert after[("cadence_tick_claimed_total", ())] == N
        assert after[("cadence_tick_enqueued_total", ())] >= N
        assert after[("cadence_rate_limit_wait_seconds_count", ())] >= 1  # every group asks the shared limit

        gauges = wait_for(web_metrics, "the retry waiting", lambda s: s[("cadence_deliveries_retrying", ())] == 1)
        assert gauges[("cadence_enrollments_due", ())] == 0
        assert gauges[("cadence_deliveries_queued", ())] == 0
        assert gauges[("cadence_deliveries_leased", ())] == 0
        assert "example.com" not in httpx.get(web_metrics).text

        folders = list((tmp_path / "data" / "metrics").glob("worker-*"))
        assert [f.name for f in folders] == [f"worker-{worker.pid}"]
        procs.stop_all()
        assert web.returncode is not None
        # A stopped run leaves no metrics folder behind (the next run starts from zero).
        assert not list((tmp_path / "data" / "metrics").glob("worker-*")), procs.logs()


def test_webhook_bounces_and_complaints_are_counted_once_at_the_web_apps_metrics(tmp_path: Path) -> None:
    auth = ("postmark", "hook-password")
    hooks = {"CADENCE_POSTMARK_WEBHOOK_USER": auth[0], "CADENCE_POSTMARK_WEBHOOK_PASSWORD": auth[1]}
    with SmtpSink() as sink, WebServer(tmp_path, sink, extra_env=hooks) as web:
        _, bounced, _ = web.add_delivery("gone@example.org")
        _, complained, _ = web.add_delivery("fan@example.com")
        bounce = {
            "RecordType": "Bounce",
            "ID": 7001,
            "Type": "HardBounce",
            "MessageID": "pm-1",
            "Metadata": {"delivery_id": str(bounced)},
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": "gone@example.org",
            "BouncedAt": "2026-12-01T12:00:00Z",
        }
        complaint = {**bounce, "RecordType": "SpamComplaint", "ID": 7002, "Type": "SpamComplaint"}
        complaint.update(Email="fan@example.com", Metadata={"delivery_id": str(complained)})
        for body in (bounce, bounce, complaint):  # the same event twice is applied once
            assert httpx.post(web.url("/webhooks/postmark"), json=body, auth=auth).status_code == 200
        samples = scrape(web.url("/metrics"))
    assert samples[("cadence_bounces_total", (("type", "hard"),))] == 1
    assert samples[("cadence_complaints_total", ())] == 1


def test_the_pending_work_gauges_are_index_scans_on_postgresql(postgres_url: str) -> None:
    """Each query of db/stats.py is answered from a partial index, whatever the table holds: with
    sequential scans priced out, a query no index can serve would still show a Seq Scan."""
    upgrade(postgres_url)
    engine = engine_for(postgres_url)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            pending_work(conn, datetime(2026, 12, 7, tzinfo=UTC))
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert len(statements) == 3
    with engine.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in statements:
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
            assert "Seq Scan" not in plan, plan
            assert "ix_enrollments_due" in plan or "ix_deliveries_" in plan, plan
