"""The SQL behind the staff console's read pages (issue 14): the dashboard's counts, the
subscriber search and profile, and the staff tags a profile shows.

Why these shapes:

- Counts are grouped in SQL (``GROUP BY``), never by loading rows: the dashboard must stay one
  round trip per figure however large the ledger grows.
- The last 30 days' failures, bounces and complaints are read through indexes that hold only
  those rows (migration 0011), not by reading every delivery and event of the period.
- The subscriber search is a ``LIKE`` on the lowercased address and name with the wildcards of
  the query escaped, which the pg_trgm indexes of migration 0011 answer on PostgreSQL; pages are
  keyset pages and the count is capped (:func:`search_subscribers`).
- Emails sent per day and per campaign are not counted here but in the results rollups
  (db/results.py), people per campaign in db/enrollment_tallies.py: both without a scan.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from cadence.db import enrollment_tallies
from cadence.db.models import (
    AuditEntry,
    CampaignState,
    Delivery,
    Enrollment,
    Event,
    Newsletter,
    Subscriber,
    SubscriberTag,
    SubscriberTopic,
    Suppression,
)


def newsletters_for_dashboard(session: Session, since: datetime, *, limit: int) -> list[Newsletter]:
    """Newsletters still to go out (scheduled, sending, paused) and those scheduled since `since`,
    newest first: a handful of rows, whatever the size of the ledger."""
    to_come = Newsletter.state.in_(("scheduled", "sending", "paused"))
    query = select(Newsletter).where(or_(to_come, Newsletter.scheduled_at >= since))
    return list(session.scalars(query.order_by(Newsletter.scheduled_at.desc()).limit(limit)))


def events_since(session: Session, since: datetime, kinds: tuple[str, ...]) -> Counter[str]:
    rows = session.execute(
        select(Event.kind, func.count()).where(Event.created_at >= since, Event.kind.in_(kinds)).group_by(Event.kind)
    )
    return Counter({str(kind): int(count) for kind, count in rows})


def failed_since(session: Session, since: datetime, *, limit: int) -> tuple[int, list[Delivery]]:
    """How many deliveries failed for good since `since`, and the newest `limit` of them."""
    where = (Delivery.state == "failed", Delivery.created_at >= since)
    total = int(session.scalar(select(func.count()).where(*where)) or 0)
    newest = list(session.scalars(select(Delivery).where(*where).order_by(Delivery.id.desc()).limit(limit)))
    return total, newest


def active_enrollments_by_campaign(session: Session) -> dict[str, int]:
    """Active enrollments per campaign, from the database's tallies (db/enrollment_tallies.py)."""
    return {
        cid: by_state.get(("active", True), 0) + by_state.get(("active", False), 0)
        for cid, by_state in enrollment_tallies.counts(session).items()
    }


def newsletter_ids(session: Session) -> set[str]:
    """Scheduled newsletters: their state is mirrored into campaign_states for the tick."""
    return set(session.scalars(select(Newsletter.id)))


def campaign_states(session: Session) -> dict[str, CampaignState]:
    return {row.campaign_id: row for row in session.scalars(select(CampaignState))}


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_subscribers(
    session: Session, text: str, *, status: str = "", tag: str = "", before: int | None = None, limit: int, cap: int
) -> tuple[int, list[Subscriber]]:
    """Subscribers whose address or first name contains `text` (all when empty), with this
    `status` and this staff `tag` if given: newest first, the `limit` with ids below `before`
    (keyset pages: the 1000th page costs what the first does, where an OFFSET reads every row
    it skips), and how many match in all, counted up to `cap` (a count stops there: counting a
    million matches exactly would read a million rows for a number nobody pages through).

    With the pg_trgm indexes of migration 0011 a ``LIKE '%text%'`` of three or more letters is
    a trigram index lookup on PostgreSQL; shorter text, or SQLite, reads rows in id order until
    the page is full (common text fills it fast)."""
    where: list[Any] = []
    if text:
        pattern = _like(text)
        address: Any = Subscriber.email_key.like(pattern, escape="\\")
        local, at, _ = text.lower().partition("@")
        if at and len(local) >= 3 and session.get_bind().dialect.name == "postgresql":
            # A whole address: the index looks up its local part only and strpos() checks the
            # rest. The same rows (the text contains "local@"), but the domain's trigrams
            # ("example", "com": in most addresses of a list) are long posting lists to merge:
            # 143 ms -> 53 ms at a million subscribers (EXPLAIN ANALYZE, bench data).
            contains = func.strpos(Subscriber.email_key, text.lower()) > 0
            address = and_(Subscriber.email_key.like(_like(local + "@"), escape="\\"), contains)
        where.append(or_(address, func.lower(Subscriber.first_name).like(pattern, escape="\\")))
    if status:
        where.append(Subscriber.status == status)
    if tag:
        where.append(exists().where(SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag == tag))
    # One search answers both the count and the page when it can: the newest `cap` matching ids.
    # A trigram lookup of a whole address reads the long posting lists of its common parts
    # ("@example.com" is in every address of the bench's million): doing it once, not twice.
    ids = list(session.scalars(select(Subscriber.id).where(*where).order_by(Subscriber.id.desc()).limit(cap)))
    below = [i for i in ids if before is None or i < before]
    if len(ids) < cap or len(below) >= limit:  # every match, or a full page, is in hand
        page = below[:limit]
    else:  # a page reaching past the newest `cap` matches
        older = select(Subscriber.id).where(*where, Subscriber.id < before).order_by(Subscriber.id.desc())
        page = list(session.scalars(older.limit(limit)))
    found = {person.id: person for person in session.scalars(select(Subscriber).where(Subscriber.id.in_(page)))}
    return len(ids), [found[i] for i in page if i in found]


def subscriber(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def subscriber_tags(session: Session, subscriber_id: int) -> list[str]:
    query = select(SubscriberTag.tag).where(SubscriberTag.subscriber_id == subscriber_id).order_by(SubscriberTag.tag)
    return list(session.scalars(query))


def subscriber_topics(session: Session, subscriber_id: int) -> list[SubscriberTopic]:
    query = (
        select(SubscriberTopic).where(SubscriberTopic.subscriber_id == subscriber_id).order_by(SubscriberTopic.topic)
    )
    return list(session.scalars(query))


def subscriber_enrollments(session: Session, subscriber_id: int) -> list[Enrollment]:
    query = select(Enrollment).where(Enrollment.subscriber_id == subscriber_id).order_by(Enrollment.enrolled_at)
    return list(session.scalars(query))


def subscriber_deliveries(session: Session, subscriber_id: int, *, limit: int) -> list[Delivery]:
    query = select(Delivery).where(Delivery.subscriber_id == subscriber_id).order_by(Delivery.id.desc()).limit(limit)
    return list(session.scalars(query))


def subscriber_events(session: Session, subscriber_id: int, *, limit: int) -> list[Event]:
    query = select(Event).where(Event.subscriber_id == subscriber_id).order_by(Event.id.desc()).limit(limit)
    return list(session.scalars(query))


def audit_page(session: Session, *, limit: int, offset: int, actor: str = "") -> tuple[int, list[AuditEntry]]:
    """The audit log, newest first, optionally of one actor (``user:ann@clinic.example``)."""
    where = [AuditEntry.actor == actor] if actor else []
    total = int(session.scalar(select(func.count()).select_from(AuditEntry).where(*where)) or 0)
    query = select(AuditEntry).where(*where).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
    return total, list(session.scalars(query.limit(limit).offset(offset)))


def suppression_counts(session: Session) -> dict[str, int]:
    """How many addresses are suppressed, by reason (hard_bounce, complaint, erased, ...)."""
    rows = session.execute(select(Suppression.reason, func.count()).group_by(Suppression.reason))
    return {str(reason): int(count) for reason, count in rows}


def recent_suppressions(session: Session, *, limit: int) -> list[Suppression]:
    query = select(Suppression).order_by(Suppression.created_at.desc(), Suppression.id.desc()).limit(limit)
    return list(session.scalars(query))


def recent_events_of(session: Session, kinds: tuple[str, ...], *, limit: int) -> list[tuple[Event, str | None]]:
    """The newest events of these kinds with the subscriber's address (None once erased)."""
    query = (
        select(Event, Subscriber.email)
        .outerjoin(Subscriber, Subscriber.id == Event.subscriber_id)
        .where(Event.kind.in_(kinds))
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return [(event, email) for event, email in session.execute(query)]
