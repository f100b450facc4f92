"""Pause, resume and cancel a campaign in the middle of a big send, with real workers: the
scenario shared by tests/test_lifecycle_worker.py (1,500 emails) and bench/lifecycle_pause.py
(10,000 emails).

Real parts only: PostgreSQL, a Redis broker, ``cadence worker`` and ``cadence scheduler``
subprocesses, an aiosmtpd sink that records when each message arrived (monotonic time in this
process, so "how long after the pause did the last email arrive" is measured at the server).

The pause and the cancel are the operations ``cadence campaigns pause|cancel`` run, called in
this process so that their commit time is known to the millisecond (the CLI around them is
tested in tests/test_lifecycle_cli.py).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from cadence.clock import FileClock
from cadence.config import Settings, load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Subscriber
from cadence.db.session import transaction
from cadence.operations.enrollment import enroll
from cadence.operations.lifecycle import change_state
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import ROOT, cadence_env, processes
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import SmtpSink

START = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York: inside the window
PAUSED = "lower-back-pain"
CANCELLED = "lower-back-pain-b"  # a copy of the same course under another id


@dataclass
class MidSend:
    n: int
    pause_at: int = 0  # emails received when the pause committed
    after_pause: int = 0  # emails that arrived after it
    pause_stop_seconds: float = 0.0  # from the pause's commit to the last email that arrived
    still_after_pause: bool = True  # no email in the quiet period that followed
    per_recipient: Counter[str] = field(default_factory=Counter)
    resume_seconds: float = 0.0  # from resume to every email sent
    cancel_at: int = 0
    after_cancel: int = 0
    cancel_stop_seconds: float = 0.0
    still_after_cancel: bool = True
    cancelled_sent: int = 0
    cancelled_skipped: int = 0
    cancelled_other: dict[str, int] = field(default_factory=dict)
    cancelled_received: Counter[str] = field(default_factory=Counter)
    send_rate: float = 0.0  # emails per second before the pause
    logs: str = ""


def _campaigns_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    source = (ROOT / "campaigns" / f"{PAUSED}.yaml").read_text(encoding="utf-8")
    (folder / f"{PAUSED}.yaml").write_text(source, encoding="utf-8")
    (folder / f"{CANCELLED}.yaml").write_text(source.replace(f"id: {PAUSED}", f"id: {CANCELLED}", 1), encoding="utf-8")
    shutil.copy(ROOT / "campaigns" / "sender.yaml", folder)  # the clinic's name and postal address
    return folder


def _enroll(settings: Settings, campaign_id: str, prefix: str, n: int) -> None:
    campaign = Runtime.from_settings(settings).catalog.get(campaign_id)
    with transaction(settings.database_url) as session:
        rows = [SubscriberInput(f"{prefix}{i}@example.com", "", "America/New_York", {}) for i in range(n)]
        import_subscribers(session, rows, START, keys=TEST_KEYS)
        people = list(session.scalars(select(Subscriber).where(Subscriber.email.like(f"{prefix}%"))))
        enroll(session, campaign, people, START)


def _received(sink: SmtpSink, prefix: str) -> list[float]:
    return [m.received_at for m in sink.messages if m.rcpt_tos[0].startswith(prefix)]


def _stop_after(sink: SmtpSink, prefix: str, stopped_at: float, quiet: float) -> tuple[int, float, bool]:
    """Wait until `quiet` seconds pass without a new email of `prefix` (at most 20 s); returns
    (emails after the stop, seconds from the stop to the last one, still for `quiet` seconds)."""
    deadline = time.monotonic() + 20
    while True:
        times = _received(sink, prefix)
        last = max(times, default=stopped_at)
        if time.monotonic() - max(last, stopped_at) >= quiet or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    later = [t for t in times if t > stopped_at]
    return len(later), max(later, default=stopped_at) - stopped_at, time.monotonic() <= deadline


def _count(settings: Settings, campaign_id: str) -> dict[str, int]:
    with transaction(settings.database_url) as session:
        return {
            state: n
            for state, n in session.execute(
                select(Delivery.state, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.state)
            )
        }


def run_mid_send(
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    n: int,
    *,
    begin_after: int,
    quiet: float = 2.0,
    accept_delay: float = 0.003,
) -> MidSend:
    """Send step 1 of the course to `n` runners; pause after `begin_after` emails arrived, wait
    until nothing arrives for `quiet` s, resume, wait for all; then the same with a second
    campaign, cancelled instead. `accept_delay`: the sink's pause per recipient (the default
    ~300 emails/s per connection leaves a small send time for the pause to land in)."""
    result = MidSend(n)

    def slow_accept(rcpt: str) -> None:
        if accept_delay:
            time.sleep(accept_delay)

    with SmtpSink(rcpt_reply=slow_accept) as sink, processes(tmp_path / "logs") as procs:
        clock = FileClock(tmp_path / "clock")
        clock.set(START)
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_CAMPAIGNS_DIR=str(_campaigns_dir(tmp_path)),
            CADENCE_BATCH_SIZE="100",
            CADENCE_TICK_SECONDS="0.5",
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        _enroll(settings, PAUSED, "p", n)
        procs.worker(env, concurrency=2)
        procs.scheduler(env)
        try:
            sink.wait_for(begin_after, timeout=300)
            first = _received(sink, "p")
            change_state(settings, PAUSED, "pause", actor="test:midsend")
            paused = time.monotonic()
            result.pause_at = len(_received(sink, "p"))
            result.send_rate = len(first) / max(1e-6, max(first) - min(first))
            result.after_pause, result.pause_stop_seconds, result.still_after_pause = _stop_after(
                sink, "p", paused, quiet
            )
            change_state(settings, PAUSED, "resume", actor="test:midsend")
            resumed = time.monotonic()
            deadline = resumed + 120 + n / 10  # a loaded 2-core machine sends ~30/s at worst
            while _count(settings, PAUSED).get("sent", 0) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            result.resume_seconds = time.monotonic() - resumed
            time.sleep(0.5)  # a duplicate, if any, would arrive now
            result.per_recipient = Counter(m.rcpt_tos[0] for m in sink.messages if m.rcpt_tos[0].startswith("p"))

            _enroll(settings, CANCELLED, "c", n)
            deadline = time.monotonic() + 120
            while len(_received(sink, "c")) < begin_after and time.monotonic() < deadline:
                time.sleep(0.02)
            change_state(settings, CANCELLED, "cancel", actor="test:midsend")
            cancelled = time.monotonic()
            result.cancel_at = len(_received(sink, "c"))
            result.after_cancel, result.cancel_stop_seconds, result.still_after_cancel = _stop_after(
                sink, "c", cancelled, quiet
            )
            counts = _count(settings, CANCELLED)
            result.cancelled_received = Counter(m.rcpt_tos[0] for m in sink.messages if m.rcpt_tos[0].startswith("c"))
            result.cancelled_sent = counts.pop("sent", 0)
            result.cancelled_skipped = counts.pop("skipped", 0)
            result.cancelled_other = counts
        finally:
            result.logs = procs.logs()
    return result
