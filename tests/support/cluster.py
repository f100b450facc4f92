"""Start real Cadence processes for end-to-end tests: Celery workers and schedulers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cadence.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def cadence_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for a Cadence process in `data_dir` using the repository's campaigns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENCE_")}
    env.update(
        {
            "CADENCE_DATA_DIR": str(data_dir),
            "CADENCE_CAMPAIGNS_DIR": str(ROOT / "campaigns"),
            "CADENCE_TEMPLATES_DIR": str(ROOT / "templates"),
            "CADENCE_SECRET_KEY": "test-secret-key-0123456789abcdef",
            "CADENCE_TICK_SECONDS": "0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def enrolled_runners(env: dict[str, str], n: int, now: datetime, prefix: str = "r") -> Settings:
    """Migrate the database of `env`, import `n` subscribers ``{prefix}{i}@example.com`` in New
    York and enroll them all in the lower-back-pain course at `now`; returns the settings."""
    from sqlalchemy import select

    from cadence.config import load_settings
    from cadence.core.subscriber_fields import SubscriberInput
    from cadence.db.migrate import upgrade
    from cadence.db.models import Subscriber
    from cadence.db.session import transaction
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.enrollment import enroll
    from cadence.operations.subscribers import import_subscribers
    from tests.support.keys import TEST_KEYS

    settings = load_settings(env)
    upgrade(settings.database_url)
    campaign = CampaignCatalog(settings.campaigns_dir).get("lower-back-pain")
    with transaction(settings.database_url) as session:
        rows = [SubscriberInput(f"{prefix}{i}@example.com", "", "America/New_York", {}) for i in range(n)]
        import_subscribers(session, rows, now, keys=TEST_KEYS)
        enroll(session, campaign, list(session.scalars(select(Subscriber))), now)
    return settings


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        *,
        program: list[str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``cadence ARGS`` (``program``: another way to run it, e.g. a clean venv's script)."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            [*(program or [sys.executable, "-m", "cadence"]), *args],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 reaches the pool children too
        )
        self.running.append(proc)
        return proc

    def worker(self, env: dict[str, str], name: str = "worker", concurrency: int = 2) -> subprocess.Popen[bytes]:
        return self.start(name, ["worker", "--concurrency", str(concurrency), "--loglevel", "INFO"], env)

    def scheduler(self, env: dict[str, str], name: str = "scheduler") -> subprocess.Popen[bytes]:
        return self.start(name, ["scheduler", "--loglevel", "INFO"], env)

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.log_dir.glob("*.log"))


@contextmanager
def processes(log_dir: Path) -> Iterator[Processes]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes(log_dir)
    try:
        yield procs
    finally:
        procs.stop_all()
