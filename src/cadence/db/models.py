"""Tables. SQLAlchemy 2 declarative models that work on SQLite and PostgreSQL.

Every timestamp is stored as naive UTC and read back timezone-aware (``UTCDateTime``), because
SQLite has no time zone type and mixing naive and aware datetimes is a classic source of bugs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names so Alembic migrations are the same on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC datetimes")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Subscriber(Base):
    """A person on the list. ``email_key`` is the lowercased address: unique case-insensitively.

    status: ``pending`` (signed up, not confirmed), ``active``, ``unsubscribed``, ``bounced``,
    ``complained``. Consent fields record how and when the person agreed (GDPR Art. 7(1)).
    """

    __tablename__ = "subscribers"
    # Signed links carry ids: SQLite must never hand a deleted (erased) subscriber's id to the
    # next one, or the old links would open the new person's preferences (AUTOINCREMENT).
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(200), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timezone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="active")
    source: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)
    consent: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Enrollment(Base):
    """One subscriber in one drip. ``next_send_at`` is when the tick should claim the next step;
    NULL while a delivery for it is in flight (so no second tick can claim it again).

    state: ``active``, ``completed`` (every step sent), ``exited`` (exit goal reached),
    ``cancelled`` (unsubscribed, suppressed, failed permanently).
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "campaign_id"),
        # The tick reads only due rows of active enrollments: a partial index keeps its cost
        # proportional to the due rows, not to the table (issue #2 benchmark, 1M enrollments).
        Index(
            "ix_enrollments_due",
            "next_send_at",
            postgresql_where=text("state = 'active' AND next_send_at IS NOT NULL"),
            sqlite_where=text("state = 'active' AND next_send_at IS NOT NULL"),
        ),
        # People per campaign and state for the console (migration 0011): an index-only scan.
        Index("ix_enrollments_campaign_state", "campaign_id", "state", "next_send_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), default="active")
    next_step: Mapped[int] = mapped_column(Integer, default=0)
    next_send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str] = mapped_column(String(100), default="")


class EnrollmentTally(Base):
    """Net changes of the number of enrollments per campaign, state and "waiting" (next send
    scheduled), appended by triggers on PostgreSQL; their sum is the count
    (db/enrollment_tallies.py, migration 0011)."""

    __tablename__ = "enrollment_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20))
    waiting: Mapped[bool] = mapped_column(Boolean)
    n: Mapped[int] = mapped_column(BigInteger)


class Delivery(Base):
    """The ledger: one row per (enrollment, step), unique, so a step is sent at most once.

    state: ``queued`` → ``sending`` (leased to a worker until ``lease_expires_at``) → ``sent`` |
    ``failed`` | ``skipped``. A transient failure goes back to ``queued`` with ``not_before`` in
    the future. ``enqueued_at`` and ``lease_expires_at`` are wall-clock times (they are about
    processes, not about the simulated business time the schedule uses).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_index"),
        # Where the tick looks for work (queries.deliveries_to_enqueue): rows waiting for a send
        # task, and rows whose task or worker may be lost. Partial on enqueued_at so that the
        # claim and the ledger updates, which never constrain it, cannot use them (migration
        # 0002 says why that matters).
        Index(
            "ix_deliveries_unqueued",
            "not_before",
            postgresql_where=text("state IN ('queued', 'sending') AND enqueued_at IS NULL"),
            sqlite_where=text("state IN ('queued', 'sending') AND enqueued_at IS NULL"),
        ),
        Index(
            "ix_deliveries_enqueued",
            "enqueued_at",
            postgresql_where=text("state IN ('queued', 'sending') AND enqueued_at IS NOT NULL"),
            sqlite_where=text("state IN ('queued', 'sending') AND enqueued_at IS NOT NULL"),
        ),
        # A newsletter reaches a subscriber once: one ledger row per (newsletter, subscriber),
        # whoever schedules it and however often (migration 0005, issue 13). Partial, because
        # drip rows repeat (campaign, subscriber) once per step.
        Index(
            "uq_deliveries_newsletter_subscriber",
            "campaign_id",
            "subscriber_id",
            unique=True,
            postgresql_where=text("kind = 'newsletter'"),
            sqlite_where=text("kind = 'newsletter'"),
        ),
        # `cadence report`: why deliveries failed, without reading the millions that were sent
        # (the counts themselves come from rollups: db/results.py, migration 0007).
        Index(
            "ix_deliveries_failed",
            "campaign_id",
            "step_index",
            postgresql_where=text("state = 'failed'"),
            sqlite_where=text("state = 'failed'"),
        ),
        # The dashboard's "failed in the last 30 days" (migration 0011).
        Index(
            "ix_deliveries_failed_created",
            "created_at",
            postgresql_where=text("state = 'failed'"),
            sqlite_where=text("state = 'failed'"),
        ),
        {"sqlite_autoincrement": True},  # web-view and unsubscribe links carry delivery ids
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[str] = mapped_column(String(100))
    step_id: Mapped[str] = mapped_column(String(100))
    step_index: Mapped[int] = mapped_column(Integer)
    segment_id: Mapped[str] = mapped_column(String(100), default="")
    # What sort of email this row is: ``drip`` (a campaign step), ``newsletter`` (a one-off send)
    # or ``transactional`` (a confirmation or data link). One ledger for all three, so retries,
    # rate limits, bounce mapping and reports work the same way for each (issues 12 and 13).
    kind: Mapped[str] = mapped_column(String(20), default="drip", server_default="drip")
    state: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which claim holds the lease: every ledger update checks it, so a worker that stalled past
    # its lease (and was replaced) can no longer mark rows another worker now owns.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(255), default="")
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Event(Base):
    """Something that happened to a subscriber or a delivery: open, click, bounce, complaint,
    unsubscribe, exit_goal (on the last email sent before the goal was reached), pause, resume,
    answers_changed (the subscriber's own actions, for the staff timeline). ``dedupe_key``
    (unique) makes webhook events apply once even when the provider delivers them twice."""

    __tablename__ = "events"
    # "Is this the first open (click, bounce...) of its delivery?": how the results rollup counts
    # unique opens and clicks without a DISTINCT over millions of rows (db/results.py).
    # The console's bounces and complaints of the last 30 days (migration 0011).
    __table_args__ = (
        Index("ix_events_delivery_kind", "delivery_id", "kind", "id"),
        Index("ix_events_kind_created", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Suppression(Base):
    """Addresses that must receive nothing, stored as a hash of the lowercased address so an
    erased subscriber (GDPR Art. 17) leaves no readable trace yet cannot be re-imported.

    ``hash_version`` says which: ``sha256`` (plain; bounces and complaints of people on the
    list) or ``hmac-sha256:<key fingerprint>`` (keyed; what an erase leaves, issue 10). See
    cadence.core.suppression_keys. One row per address and key: its reason is the strongest known.
    """

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash_version: Mapped[str] = mapped_column(String(40), default="sha256", server_default="sha256")
    reason: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Link(Base):
    """A destination URL for click tracking: ``/c/<token>`` maps to a stored row, never to a URL
    taken from the request, so the tracker cannot be used as an open redirect."""

    __tablename__ = "links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64), unique=True)


class SubscriberTopic(Base):
    """A newsletter topic ("clinic-news") a subscriber agreed to receive, with when and how.

    A table, not a JSON list on the subscriber, because a newsletter's audience is chosen by
    topic: "everyone on clinic-news" must be an indexed join on PostgreSQL and SQLite alike.
    Consent to a topic is recorded with the signup's consent version (GDPR Art. 7(1): the
    sender must be able to show what each person agreed to).
    """

    __tablename__ = "subscriber_topics"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    topic: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(100), default="")


class SubscriberTag(Base):
    """A staff-given label ("vip", "met-at-expo-2026") for choosing audiences and finding people.
    Tags are the staff's; attributes are what subscribers told us (segment rules read those)."""

    __tablename__ = "subscriber_tags"

    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignState(Base):
    """What staff decided about a campaign: ``running`` (no row means running), ``paused``,
    ``cancelled`` or ``archived``. Checked by the tick and by every send batch, so a pause takes
    effect for deliveries already queued, not only for future ticks (issue 13)."""

    __tablename__ = "campaign_states"

    campaign_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="running")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(Text, default="")


class AuditEntry(Base):
    """Who did what to which campaign, newsletter, subscriber or user, and when: every staff
    action through any door (CLI, API, console) leaves one row (issue 13). ``actor`` names the
    door and the person: ``cli:<os user>``, ``user:<email>``, ``token:<name>``. Never holds a
    password, token or full message body; ``detail`` is a small JSON object."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_actor_at", "actor", "at"),)  # one person's entries (0011)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Newsletter(Base):
    """A scheduled newsletter (issue 13): its state and the version that goes out.

    state: ``scheduled`` → ``sending`` → ``sent``; ``paused`` and ``cancelled`` by staff (the
    rules are core/newsletter.py). A draft has no row: it is only a file. ``content`` is the
    locked version, what every copy is rendered from: the phase-1 MJML and what rendering
    needs besides (sender, tracking, UTM), so an edit of the file or of the shared layout after
    scheduling never changes what goes out; ``content_hash`` identifies it.
    ``audience`` is the audience as scheduled, read again at send time (topics still held).
    """

    __tablename__ = "newsletters"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    subject: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[str] = mapped_column(String(20), default="scheduled")
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    audience: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    send_at: Mapped[str] = mapped_column(String(60), default="now")
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(200), default="")
class ApiToken(Base):
    """A staff API token (``Authorization: Bearer ...``). Only the SHA-256 of the token is kept:
    the token is 32 random bytes, so a fast hash is enough (no password stretching is needed
    for a secret nobody chose; OWASP Password Storage cheat sheet). ``scope``: ``read`` <
    ``write`` < ``admin``. A revoked token stays listed, with when it was revoked."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ResultRollup(Base):
    """Campaign results folded from the ledger and the events, per step, segment and day (UTC):
    how `cadence report` stays under a second with millions of rows (db/results.py). ``metric``:
    ``sent``, ``failed``, ``skipped`` (deliveries, by the day sent or due), ``open``, ``click``
    (unique per delivery), ``clicks`` (every click), ``unsubscribe``, ``hard_bounce``,
    ``soft_bounce``, ``complaint`` (unique per delivery)."""

    __tablename__ = "result_rollups"

    campaign_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    metric: Mapped[str] = mapped_column(String(20), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class LinkRollup(Base):
    """Unique clicks per link (one per delivery and link), per step and day (db/results.py)."""

    __tablename__ = "link_rollups"

    campaign_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class RollupWatermark(Base):
    """How far a table (``events``, ``deliveries``) is folded into the rollups: every row with
    an id up to ``last_id``. ``candidate_id`` (the largest id at ``candidate_at``, database
    time) becomes the next bound once it is old enough: db/results.py says why."""

    __tablename__ = "rollup_watermarks"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    candidate_id: Mapped[int] = mapped_column(BigInteger, default=0)
    candidate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RollupPending(Base):
    """Deliveries at or below the ``deliveries`` watermark that were still queued or sending
    when folded: counted live until they are sent, failed or skipped, then folded."""

    __tablename__ = "rollup_pending"

    delivery_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
