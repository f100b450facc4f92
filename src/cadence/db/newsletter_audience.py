"""Who is in a newsletter's audience: the SQL side (issue 13).

Reads go through the topic and tag indexes (``subscriber_topics.topic``, ``subscriber_tags.tag``)
and stream in chunks (keyset pagination on the subscriber id), so a 100,000-person list never
sits in memory at once. Attribute rules and drip segments are decided in Python by
core/newsletter.py, the same rule code the drips' segments use (core/segments.py): the rule
language has operators (``within_weeks``, case-insensitive number-or-text comparisons) that
JSON columns on SQLite and PostgreSQL could not express alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from cadence.db.models import Subscriber, SubscriberTag, SubscriberTopic, Suppression

__all__ = [
    "Candidate",
    "audience_candidates",
    "suppressed_among",
    "topics_of",
]

_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A confirmed (``active``) subscriber who has one of the audience's topics and tags."""

    id: int
    email: str
    attributes: dict[str, Any]
    timezone: str | None
    topics: frozenset[str]
    tags: frozenset[str]


def audience_candidates(session: Session, topics: Sequence[str], tags: Sequence[str]) -> Iterator[Candidate]:
    """Active subscribers holding any of `topics` (if given) and any of `tags` (if given), in id
    order, in chunks (keyset pagination: a 100,000-person list never sits in memory at once).
    Unsubscribed, bounced, complained and pending (unconfirmed) people are not ``active``."""
    conditions = [Subscriber.status == "active"]
    if topics:
        conditions.append(
            exists().where(SubscriberTopic.subscriber_id == Subscriber.id, SubscriberTopic.topic.in_(list(topics)))
        )
    if tags:
        conditions.append(
            exists().where(SubscriberTag.subscriber_id == Subscriber.id, SubscriberTag.tag.in_(list(tags)))
        )
    after = 0
    while True:
        rows = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.attributes, Subscriber.timezone)
            .where(*conditions, Subscriber.id > after)
            .order_by(Subscriber.id)
            .limit(_CHUNK)
        ).all()
        if not rows:
            return
        ids = [row[0] for row in rows]
        held_topics = topics_of(session, ids)
        held_tags: dict[int, set[str]] = defaultdict(set)
        for subscriber_id, tag in session.execute(
            select(SubscriberTag.subscriber_id, SubscriberTag.tag).where(SubscriberTag.subscriber_id.in_(ids))
        ):
            held_tags[subscriber_id].add(tag)
        for subscriber_id, email, attributes, timezone in rows:
            yield Candidate(
                subscriber_id,
                email,
                dict(attributes or {}),
                timezone,
                frozenset(held_topics.get(subscriber_id, ())),
                frozenset(held_tags.get(subscriber_id, ())),
            )
        after = ids[-1]


def topics_of(session: Session, subscriber_ids: Sequence[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    if subscriber_ids:
        for subscriber_id, topic in session.execute(
            select(SubscriberTopic.subscriber_id, SubscriberTopic.topic).where(
                SubscriberTopic.subscriber_id.in_(list(subscriber_ids))
            )
        ):
            found[subscriber_id].add(topic)
    return found


def suppressed_among(session: Session, hashes: Sequence[str]) -> set[str]:
    """Which of these plain suppression hashes (subscribers.email_hash) are suppressed."""
    found: set[str] = set()
    unique = sorted(set(hashes))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        found.update(session.scalars(select(Suppression.email_hash).where(Suppression.email_hash.in_(chunk))))
    return found
