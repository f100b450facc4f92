"""The SQL of the staff's subscriber tools: search, profile, export, tags, staff suppression.

Search matches a substring of the address or the first name, case-insensitively: ``email_key``
is stored lowercased, so only the first name needs ``lower()``. A leading-wildcard LIKE cannot
use a B-tree index; at a million subscribers the scan takes a few hundred milliseconds, which
is fine for a person typing (a trigram index would need the pg_trgm extension on every server).
Pages are keyset pages (``id > after``), so page 100 costs what page 1 costs.

Export streams: ``yield_per`` makes psycopg use a server-side cursor (SQLAlchemy docs, "Fetching
Large Result Sets with Yield Per"), so a million rows never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Select, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from cadence.db.models import (
    CampaignState,
    Event,
    Newsletter,
    Subscriber,
    SubscriberTag,
    Suppression,
)

# A profile reads the same rows the subscriber's own export does: one copy of those queries.
from cadence.db.self_service import deliveries_of as deliveries_of
from cadence.db.self_service import enrollments_of as enrollments_of
from cadence.db.self_service import topics_of as topics_of

STREAM_CHUNK = 1000


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_query(
    *,
    text: str | None,
    statuses: Sequence[str],
    tags: Sequence[str],
    after: int | None,
    email_key: str | None = None,
) -> Select[Subscriber]:
    """Subscribers matching every given filter, by id. Every tag in `tags` must be present.
    `email_key`: exactly this address (the unique email_key index), where `text` is a substring."""
    query = select(Subscriber).order_by(Subscriber.id)
    if email_key is not None:
        query = query.where(Subscriber.email_key == email_key)
    if text:
        pattern = f"%{_escape_like(text.strip().lower())}%"
        query = query.where(
            or_(
                Subscriber.email_key.like(pattern, escape="\\"),
                func.lower(Subscriber.first_name).like(pattern, escape="\\"),
            )
        )
    if statuses:
        query = query.where(Subscriber.status.in_(list(statuses)))
    for tag in tags:
        query = query.where(exists().where(SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag == tag))
    if after is not None:
        query = query.where(Subscriber.id > after)
    return query


def stream(session: Session, query: Select[Subscriber]) -> Iterator[Subscriber]:
    """The query's subscribers, fetched STREAM_CHUNK at a time (server-side cursor on PostgreSQL)."""
    yield from session.scalars(query.execution_options(yield_per=STREAM_CHUNK))


def tags_of(session: Session, subscriber_ids: Iterable[int]) -> dict[int, list[str]]:
    ids = list(subscriber_ids)
    found: dict[int, list[str]] = {i: [] for i in ids}
    if not ids:
        return found
    for subscriber_id, tag in session.execute(
        select(SubscriberTag.subscriber_id, SubscriberTag.tag)
        .where(SubscriberTag.subscriber_id.in_(ids))
        .order_by(SubscriberTag.tag)
    ):
        found[subscriber_id].append(tag)
    return found


def by_email_key(session: Session, key: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def events_of(session: Session, subscriber_id: int, delivery_ids: Sequence[int]) -> list[Event]:
    """Events of the subscriber, and of their deliveries (an event may name only the delivery)."""
    where = Event.subscriber_id == subscriber_id
    if delivery_ids:
        where = or_(where, Event.delivery_id.in_(list(delivery_ids)))
    return list(session.scalars(select(Event).where(where).order_by(Event.created_at, Event.id)))


def add_suppression(session: Session, digest: str, version: str, reason: str, detail: str, now: datetime) -> bool:
    """A plain-hash suppression row, unless one exists. True if added."""
    if session.scalar(select(Suppression.id).where(Suppression.email_hash == digest)) is not None:
        return False
    session.add(Suppression(email_hash=digest, hash_version=version, reason=reason, detail=detail, created_at=now))
    session.flush()
    return True


def remove_suppression(session: Session, digest: str) -> bool:
    """Delete the row stored under `digest` (never the keyed rows an erase leaves: their
    digests are not plain SHA-256). True if one was deleted."""
    return bool(session.execute(delete(Suppression).where(Suppression.email_hash == digest)).rowcount)  # type: ignore[attr-defined]


def add_tags(session: Session, subscriber_ids: Sequence[int], tags: Sequence[str], now: datetime) -> int:
    """Add each tag to each subscriber that lacks it; returns the rows added."""
    if not subscriber_ids or not tags:
        return 0
    have = {
        (subscriber_id, tag)
        for subscriber_id, tag in session.execute(
            select(SubscriberTag.subscriber_id, SubscriberTag.tag).where(
                SubscriberTag.subscriber_id.in_(list(subscriber_ids)), SubscriberTag.tag.in_(list(tags))
            )
        )
    }
    new = [
        SubscriberTag(subscriber_id=i, tag=t, created_at=now)
        for i in subscriber_ids
        for t in tags
        if (i, t) not in have
    ]
    session.add_all(new)
    session.flush()
    return len(new)


def remove_tags(session: Session, subscriber_ids: Sequence[int], tags: Sequence[str]) -> int:
    if not subscriber_ids or not tags:
        return 0
    done = session.execute(
        delete(SubscriberTag).where(
            SubscriberTag.subscriber_id.in_(list(subscriber_ids)), SubscriberTag.tag.in_(list(tags))
        )
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


def campaign_conditions(session: Session, campaign_ids: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """For a subscriber's timeline: (state of each campaign staff touched: paused, cancelled,
    archived; none means running), (the zone of each newsletter, for copies of subscribers
    without one: the locked content's, as the send path reads it). Two small reads by key."""
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}, {}
    touched = select(CampaignState.campaign_id, CampaignState.state).where(CampaignState.campaign_id.in_(ids))
    states = {cid: state for cid, state in session.execute(touched)}
    zones = {
        nid: zone
        for nid, zone in session.execute(
            select(Newsletter.id, Newsletter.content["timezone"].as_string()).where(Newsletter.id.in_(ids))
        )
        if zone
    }
    return states, zones
