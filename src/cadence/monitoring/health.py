"""Health checks shared by ``/readyz``, ``cadence doctor`` and ``cadence worker-health``.

Each check returns a :class:`Check`: pass, warn or fail, what was seen, and for anything but a
pass, the fix. Checks never raise for the condition they test (an unreachable database is a
failed check, not an exception) and never print secrets: URLs are shown without passwords.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from cadence.config import Settings

Status = Literal["pass", "warn", "fail"]
# A check must answer well within an orchestrator's probe timeout (Kubernetes: 1 s by default,
# systemd/HAProxy probes a few seconds).
PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"


def passed(name: str, detail: str) -> Check:
    return Check(name, "pass", detail)


def any_failed(checks: Sequence[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def safe_url(url: str) -> str:
    """`url` without its user part (a password, or a provider's API token as the user)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def check_schema(settings: Settings) -> Check:
    """The database is reachable and at the head of our migrations."""
    from cadence.db.migrate import schema_revisions
    from cadence.db.session import DatabaseError

    name = "database schema"
    where = safe_url(settings.database_url)
    try:
        current, heads, ahead = schema_revisions(settings.database_url)
    except (DatabaseError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        fix = "check CADENCE_DATABASE_URL and that the server runs"
        return Check(name, "fail", f"database unreachable at {where}: {reason}", fix)
    if current == heads:
        return passed(name, f"at the migration head ({', '.join(sorted(heads))})")
    if ahead:
        # Upgrades migrate first and restart afterwards (docs/deploy.md): until its restart, this
        # release runs on a newer schema written to keep it working, so it is still ready.
        seen = ", ".join(sorted(current))
        return passed(name, f"at {seen}, newer than this release's head (a rolling upgrade in progress)")
    seen = ", ".join(sorted(current)) or "no schema"
    head = ", ".join(sorted(heads))
    return Check(name, "fail", f"database at {seen}, the migrations' head is {head}", "run `cadence db upgrade`")


def check_broker(settings: Settings) -> Check:
    """The Celery broker answers (Redis PING, an AMQP connection, the filesystem folder)."""
    name = "broker"
    url = settings.broker_url
    where = safe_url(url)
    fix = "check CADENCE_BROKER_URL and that the broker runs"
    try:
        if settings.uses_redis_broker:
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT)
            try:
                client.ping()
            finally:
                client.close()
        elif url.startswith("filesystem://"):
            folder = settings.data_dir / "broker"
            if folder.exists() and not folder.is_dir():
                return Check(name, "fail", f"{folder} is not a folder", "remove it; the worker creates the folder")
        elif url.startswith("amqp://"):
            from kombu import Connection  # type: ignore[attr-defined]

            with Connection(url, connect_timeout=PROBE_TIMEOUT) as conn:  # type: ignore[no-untyped-call]
                conn.ensure_connection(max_retries=1)
    except Exception as exc:  # redis, kombu and socket errors have no common base
        return Check(name, "fail", f"broker unreachable at {where}: {exc}", fix)
    return passed(name, f"reachable at {where}")


def check_workers(settings: Settings, *, timeout: float, hostname: str | None = None) -> Check:
    """Ping the Celery workers through the broker (remote control): pass if `hostname` (or, without
    it, at least one worker) answers within `timeout` seconds."""
    name = "workers"
    broker = check_broker(settings)
    if broker.status == "fail":
        return Check(name, "fail", broker.detail, broker.fix)
    from cadence.tasks import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.ping(destination=[hostname] if hostname else None, timeout=timeout)
    except Exception as exc:  # kombu's connection errors have no common base
        return Check(name, "fail", f"cannot ping workers: {exc}", "check CADENCE_BROKER_URL")
    finally:
        app.close()
    answered = sorted(host for reply in replies for host in reply)
    if not answered:
        who = hostname or "no worker"
        return Check(
            name, "fail", f"{who} answered a ping within {timeout:g} s", "start `cadence worker`, or check its log"
        )
    return passed(name, f"{len(answered)} answered: {', '.join(answered)}")
