"""Enrolling a whole list (``campaigns enroll --all`` / ``--segment``) a page at a time: the same
outcome per subscriber as enrolling them one by one, with a few statements per page and no
object per subscriber held in the session, so a million subscribers take flat memory
(bench/scale.py measured the list-of-objects way at ~10 KB and ~0.5 ms per subscriber)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, update

from cadence.core import drip_policy
from cadence.core.schedule import subscriber_zone
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Enrollment, Subscriber
from cadence.db.session import engine_for, transaction
from cadence.files.catalog import CampaignCatalog
from cadence.operations.enrollment import EnrollResult, enroll, enroll_active
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import ROOT
from tests.support.keys import TEST_KEYS

LBP = CampaignCatalog(ROOT / "campaigns", ROOT / "templates").get("lower-back-pain")
NOW = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # Monday 07:30 in New York, 21:30 in Tokyo
ZONES = ["America/New_York", "Asia/Tokyo", None]
TRAIL = {"terrain": "trails"}
ROAD = {"terrain": "roads", "training_for_race": "no"}


def load_list(database_url: str, n: int) -> None:
    upgrade(database_url)
    rows = [SubscriberInput(f"r{i}@example.com", "", ZONES[i % 3], TRAIL if i % 2 else ROAD) for i in range(n)]
    with transaction(database_url) as session:
        import_subscribers(session, rows, NOW, keys=TEST_KEYS)


def by_email(session: Any) -> dict[str, Enrollment]:
    query = select(Subscriber.email, Enrollment).join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
    return {email: enrollment for email, enrollment in session.execute(query)}


def test_everyone_gets_what_enrolling_one_by_one_gives(database_url: str) -> None:
    load_list(database_url, 12)
    with transaction(database_url) as session:
        # Before: r0 enrolled and active, r1 enrolled then cancelled (unsubscribed, back again),
        # r2 unsubscribed now, r3 still pending its confirmation.
        first_two = list(
            session.scalars(select(Subscriber).where(Subscriber.email.in_(["r0@example.com", "r1@example.com"])))
        )
        enroll(session, LBP, first_two, NOW)
        session.execute(
            update(Enrollment)
            .where(
                Enrollment.subscriber_id
                == select(Subscriber.id).where(Subscriber.email == "r1@example.com").scalar_subquery()
            )
            .values(state="cancelled", next_send_at=None, end_reason="unsubscribed")
        )
        session.execute(update(Subscriber).where(Subscriber.email == "r2@example.com").values(status="unsubscribed"))
        session.execute(update(Subscriber).where(Subscriber.email == "r3@example.com").values(status="pending"))

    with transaction(database_url) as session:
        result = enroll_active(session, LBP, NOW, page_size=5)  # pages of 5: three pages and a bit
    assert result == EnrollResult(enrolled=8, resumed=1, already=1, not_active=0)

    with transaction(database_url) as session:
        enrolled = by_email(session)
        zones = {s.email: s.timezone for s in session.scalars(select(Subscriber))}
    assert set(enrolled) == {f"r{i}@example.com" for i in range(12)} - {"r2@example.com", "r3@example.com"}
    for email, enrollment in enrolled.items():
        assert (enrollment.state, enrollment.next_step, enrollment.enrolled_at) == ("active", 0, NOW), email
        # The first step timed in the subscriber's own zone (Tokyo is outside its window now).
        due = drip_policy.first_step_due(LBP, enrolled_at=NOW, tz=subscriber_zone(zones[email], LBP))
        assert enrollment.next_send_at == due, email
    assert enrolled["r4@example.com"].next_send_at != enrolled["r5@example.com"].next_send_at  # New York vs Tokyo


def test_a_segment_enrolls_only_those_in_it_now(database_url: str) -> None:
    load_list(database_url, 10)
    with transaction(database_url) as session:
        result = enroll_active(session, LBP, NOW, segment="trail+no-race", page_size=3)
    assert result.enrolled == 5
    with transaction(database_url) as session:
        assert sorted(by_email(session)) == sorted(f"r{i}@example.com" for i in range(1, 10, 2))


@contextmanager
def counted_statements(database_url: str) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = engine_for(database_url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_list_is_enrolled_in_a_few_statements_per_page_without_an_object_per_subscriber(
    database_url: str,
) -> None:
    load_list(database_url, 40)
    with counted_statements(database_url) as statements, transaction(database_url) as session:
        result = enroll_active(session, LBP, NOW, page_size=10)
        held = [obj for obj in session.identity_map.values() if isinstance(obj, Subscriber | Enrollment)]
    assert result.enrolled == 40
    assert held == []  # rows, not objects: memory is one page whatever the list's size
    # Per page: read the page, read its existing enrollments, one INSERT; then one empty page.
    work = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "INSERT"))]
    assert len(work) <= 3 * 4 + 1, work
