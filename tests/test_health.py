"""Health checks an orchestrator runs: ``/healthz`` and ``/readyz`` over HTTP against the real
``cadence web``, and the installed ``cadence worker-health`` against a real worker."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import cadence_env, processes
from tests.support.web import WebServer, free_port

pytestmark = pytest.mark.slow
CADENCE = str(Path(sys.executable).with_name("cadence"))


def cadence(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CADENCE, *args], env=env, capture_output=True, text=True, timeout=60)


def wait_http(url: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_ready_web_app_answers_healthz_and_readyz(web: WebServer) -> None:
    assert httpx.get(web.url("/healthz")).json() == {"status": "ok"}
    ready = httpx.get(web.url("/readyz"))
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database schema"]["status"] == "pass"
    assert body["checks"]["broker"]["status"] == "pass"


def test_readyz_is_503_with_the_reason_until_the_schema_is_migrated_and_the_broker_answers(tmp_path: Path) -> None:
    port = free_port()
    env = cadence_env(
        tmp_path / "data",
        CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}",  # never migrated
        CADENCE_BROKER_URL="redis://:hunter2-password@127.0.0.1:1/0",  # nothing listens on port 1
        CADENCE_BASE_URL=f"http://127.0.0.1:{port}",
    )
    with processes(tmp_path / "logs") as procs:
        procs.start("web", ["web", "--port", str(port), "--log-level", "warning"], env)
        # Alive, though it cannot serve yet: a liveness probe must not get it restarted.
        assert wait_http(f"http://127.0.0.1:{port}/healthz").status_code == 200
        not_ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert not_ready.status_code == 503
        checks = not_ready.json()["checks"]
        assert checks["database schema"]["status"] == "fail"
        assert checks["database schema"]["fix"] == "run `cadence db upgrade`"
        assert checks["broker"]["status"] == "fail"
        assert "127.0.0.1:1" in checks["broker"]["detail"]
        assert "hunter2" not in not_ready.text

        assert cadence(env, "db", "upgrade").returncode == 0
        checks = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"]
        assert checks["database schema"]["status"] == "pass"
        assert checks["broker"]["status"] == "fail"

        # A newer release migrated the database first (docs/deploy.md, upgrades): this one stays
        # ready until it is restarted, rather than every web process leaving the load balancer.
        with sqlite3.connect(tmp_path / "fresh.db") as db:
            db.execute("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'")
        schema = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"]["database schema"]
        assert schema["status"] == "pass"
        assert "newer than this release's head" in schema["detail"]


def test_worker_health_exits_0_while_a_worker_answers_and_1_without_one(tmp_path: Path, redis_url: str) -> None:
    env = cadence_env(tmp_path / "data", CADENCE_BROKER_URL=redis_url)
    nobody = cadence(env, "worker-health", "--timeout", "1")
    assert nobody.returncode == 1
    assert "no worker answered a ping within 1 s" in nobody.stderr
    assert "Traceback" not in nobody.stderr

    with processes(tmp_path / "logs") as procs:
        procs.worker(env, concurrency=1)
        deadline = time.monotonic() + 60
        while (alive := cadence(env, "worker-health", "--timeout", "2")).returncode != 0:
            assert time.monotonic() < deadline, f"{alive.stderr}\n{procs.logs()}"
        assert "healthy: 1 answered: celery@" in alive.stdout
        node = alive.stdout.rsplit(": ", 1)[1].strip()
        assert cadence(env, "worker-health", "--hostname", node).returncode == 0
        other = cadence(env, "worker-health", "--hostname", "celery@elsewhere", "--timeout", "1")
        assert other.returncode == 1
        assert "celery@elsewhere answered" not in other.stdout

    unreachable = cadence({**env, "CADENCE_BROKER_URL": "redis://127.0.0.1:1/0"}, "worker-health")
    assert unreachable.returncode == 1
    assert "broker unreachable at redis://127.0.0.1:1/0" in unreachable.stderr
