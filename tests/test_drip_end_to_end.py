"""The drip end to end: real Celery workers and schedulers, a real SMTP server, real databases.

50 subscribers across three segments and many time zones go through all eight steps while a
``file:`` clock moves through three weeks. At the SMTP server we check: exactly one message per
(subscriber, step), each inside the send window in the subscriber's own zone, each the segment
variant that matched at send time (one subscriber changes from trail to race mid-drip).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections import Counter
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from jinja2 import FileSystemLoader
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.campaign import Campaign
from cadence.core.render import Renderer, render_email
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Subscriber
from cadence.db.session import transaction
from cadence.files.campaigns import find_campaign
from cadence.operations.enrollment import enroll
from cadence.operations.simulation import ClockDriver
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import ROOT, cadence_env, processes
from tests.support.keys import TEST_KEYS
from tests.support.services import postgres_database
from tests.support.smtpd import SmtpSink

pytestmark = pytest.mark.slow

ZONES = [
    "America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
    "Asia/Tokyo", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Kolkata", "",
]  # fmt: skip
START = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # a Monday
SWITCHER = "switcher@example.com"


def people(n: int) -> list[SubscriberInput]:
    rows = []
    for i in range(n - 1):
        kind = i % 3
        attrs = (
            {"terrain": "trails"}
            if kind == 0
            else {"terrain": "roads", "training_for_race": "yes" if kind == 1 else "no"}
        )
        rows.append(SubscriberInput(f"runner{i}@example.com", f"Runner{i}", ZONES[i % len(ZONES)] or None, attrs))
    rows.append(SubscriberInput(SWITCHER, "Sam", "America/New_York", {"terrain": "trails"}))
    return rows


USED = ("trail+no-race", "everyday+race", "everyday+no-race")  # the segments people() fills


def segment_markers(campaign: Campaign) -> dict[tuple[str, str], tuple[set[str], set[str]]]:
    """For each step and used segment: the lines only its version has (must be in the email) and
    the lines only the other used segments' versions have (must not be)."""
    renderer = Renderer(FileSystemLoader(str(ROOT / "templates")))
    links = {"unsubscribe": "https://x/u", "preferences": "https://x/p", "web_view": "https://x/v"}
    texts: dict[tuple[str, str], set[str]] = {}
    for step in campaign.steps:
        for segment in (campaign.segment(s) for s in USED):
            variant = renderer.variant(campaign, step, segment)
            rendered = render_email(
                variant, subscriber={"first_name": "", "email": "a@b.c", "attributes": {}}, links=links
            )
            texts[(step.id, segment.id)] = {
                " ".join(line.split())
                for line in rendered.text.splitlines()
                if len(line.split()) >= 6 and "http" not in line
            }
    markers = {}
    for (step_id, segment_id), lines in texts.items():
        others = set().union(*(v for (s, g), v in texts.items() if s == step_id and g != segment_id))
        markers[(step_id, segment_id)] = (lines - others, others - lines)
        assert any(markers[(step_id, segment_id)]), f"{step_id}/{segment_id} has no segment-specific text"
    return markers


def body_text(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return " ".join(part.get_content().split())


def run_drip(tmp_path: Path, database_url: str, broker_url: str, *, schedulers: int, n: int = 50) -> None:
    campaign = find_campaign("lower-back-pain", ROOT / "campaigns", ROOT / "templates")
    markers = segment_markers(campaign)
    clock = FileClock(tmp_path / "clock")
    clock.set(START)
    with SmtpSink() as sink, processes(tmp_path / "logs") as procs:
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=database_url,
            CADENCE_BROKER_URL=broker_url,
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BATCH_SIZE="10",
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        with transaction(settings.database_url) as session:
            import_subscribers(session, people(n), START, keys=TEST_KEYS)
            subscribers = list(session.scalars(select(Subscriber)))
            assert enroll(session, campaign, subscribers, START).enrolled == n
            ids = [s.id for s in subscribers]
        procs.worker(env)
        procs.scheduler(env, name="scheduler0")
        for k in range(1, schedulers):  # a second one by mistake (own beat schedule file, same broker)
            procs.scheduler({**env, "CADENCE_DATA_DIR": str(tmp_path / f"beat{k}")}, name=f"scheduler{k}")

        switched: list[datetime] = []

        def switch_segment(now: datetime) -> None:
            if switched:
                return
            with transaction(settings.database_url) as session:
                sam = session.scalar(select(Subscriber).where(Subscriber.email_key == SWITCHER))
                assert sam is not None
                sent = session.scalars(
                    select(Delivery.step_index).where(Delivery.subscriber_id == sam.id, Delivery.state == "sent")
                ).all()
                if len(sent) == 2:
                    sam.attributes = {"terrain": "roads", "training_for_race": "yes"}
                    switched.append(now)

        try:
            final = ClockDriver(settings, clock, ids).run(processes=procs.running, on_step=switch_segment, timeout=400)
        except Exception:
            print(procs.logs())
            raise
        total = n * len(campaign.steps)
        assert final.sent == total
        received = sink.wait_for(total, timeout=30)
        assert switched, "the switcher never reached step 2"

    with transaction(settings.database_url) as session:
        by_message_id = {
            d.message_id: (d, s)
            for d, s in session.execute(
                select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            )
        }
    assert len(received) == total
    seen: Counter[tuple[int, int]] = Counter()
    for message in received:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        delivery, subscriber = by_message_id[parsed["Message-ID"]]
        seen[(subscriber.id, delivery.step_index)] += 1
        assert message.rcpt_tos == (subscriber.email,)
        # Inside the window (07:00-09:00, Mon-Sat) in the subscriber's zone, or the campaign's.
        zone = ZoneInfo(subscriber.timezone or campaign.timezone)
        local = email.utils.parsedate_to_datetime(parsed["Date"]).astimezone(zone)
        assert time(7) <= local.time() < time(9), (subscriber.email, local)
        assert local.weekday() in campaign.send_window.weekdays
        # The variant that matched when it was sent, in substance, not just a label.
        text = body_text(message.data)
        step = campaign.steps[delivery.step_index]
        own, foreign = markers[(step.id, delivery.segment_id)]
        assert all(m in text for m in own) and not any(m in text for m in foreign), (step.id, delivery.segment_id)
        if subscriber.email == SWITCHER:
            assert delivery.segment_id == ("trail+no-race" if delivery.step_index < 2 else "everyday+race")
        assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", parsed["Message-ID"])
    assert set(seen.values()) == {1} and len(seen) == total


def test_fifty_subscribers_get_every_step_once_on_sqlite_with_the_filesystem_broker(tmp_path: Path) -> None:
    run_drip(tmp_path, f"sqlite:///{tmp_path / 'cadence.db'}", "filesystem://", schedulers=1)


def test_fifty_subscribers_get_every_step_once_on_postgres_and_redis_with_two_schedulers(
    tmp_path: Path, redis_url: str
) -> None:
    with postgres_database() as database_url:
        run_drip(tmp_path, database_url, redis_url, schedulers=2)
