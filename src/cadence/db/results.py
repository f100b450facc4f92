"""The SQL of campaign results (``cadence report``, issue 13 item 6).

Two sources, chosen by how each one changes:

- **Deliveries** change state (queued → sent | failed), so they are counted live, per step,
  segment and state. ``ix_deliveries_results`` (migration 0007) holds every column the count
  reads, so PostgreSQL answers from the index alone (an index-only scan) without touching the
  6-million-row table.
- **Events** (opens, clicks, bounces, complaints, unsubscribes) are append-only, so they are
  *folded* into small rollup tables (``result_rollups``, ``link_rollups``) and each report only
  folds the events that arrived since the last one (``rollup_watermarks``). Counting unique
  opens live would join millions of events to millions of deliveries on every report.

Why the fold can never skip an event: ids come from a sequence, and a transaction may take id 100
and commit after another committed id 101. A fold that read "up to 101" would then skip 100
forever. So the upper bound of a fold is read in its own short transaction that first takes a
``SHARE ROW EXCLUSIVE`` lock on events (PostgreSQL docs, "Table-Level Locks": it waits for every
transaction holding ROW EXCLUSIVE, i.e. every insert in flight, and conflicts with itself). Once
granted, every id up to the current maximum is committed or gone; ids handed out later are
larger. The lock lasts one ``SELECT max(id)``. SQLite writers are serialised already.

Erasing a subscriber deletes their events; counts already folded stay (they hold no person).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from cadence.db.models import Delivery, Event, Link, LinkRollup, ResultRollup, RollupWatermark

# Event kinds counted once per delivery (the first one), and the metric each one feeds.
UNIQUE_KINDS = ("open", "click", "unsubscribe", "hard_bounce", "soft_bounce", "complaint")
_WATERMARK = "events"


def _day(session: Session, column: Any) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of a stored (naive UTC) timestamp, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.substr(column, 1, 10)


def safe_event_bound(session: Session) -> int:
    """The largest event id below which nothing can still appear (see the module docstring).
    Call it in a transaction of its own and commit at once: the lock lasts until then."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE")
    return int(session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)


def fold_events(session: Session, upto: int) -> int:
    """Fold events with ids in (watermark, `upto`] into the rollups; returns how many events
    were read. The watermark row is locked, so two reports folding at once cannot count twice
    (the second one waits, then finds nothing left to fold)."""
    dialect = session.get_bind().dialect.name
    mark = session.scalar(select(RollupWatermark).where(RollupWatermark.name == _WATERMARK).with_for_update())
    if mark is None:
        _upsert(session, RollupWatermark, [{"name": _WATERMARK, "last_id": 0}], ["name"], None, dialect)
        mark = session.scalar(select(RollupWatermark).where(RollupWatermark.name == _WATERMARK).with_for_update())
    assert mark is not None
    start = int(mark.last_id)
    if upto <= start:
        return 0
    window = and_(Event.id > start, Event.id <= upto)
    day = _day(session, Event.created_at)
    earlier = aliased(Event)
    first_of_kind = ~exists().where(
        earlier.delivery_id == Event.delivery_id, earlier.kind == Event.kind, earlier.id < Event.id
    )
    group = (Delivery.campaign_id, Delivery.step_index, Delivery.segment_id, day)
    rows: dict[tuple[str, int, str, str, str], int] = {}
    # Unique per delivery: the first open (click, bounce...) of each delivery counts.
    for campaign, step, segment, on_day, kind, n in session.execute(
        select(*group, Event.kind, func.count())
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(window, Event.kind.in_(UNIQUE_KINDS), first_of_kind)
        .group_by(*group, Event.kind)
    ):
        rows[(campaign, step, segment, on_day, kind)] = n
    # Every click (one per delivery and link: the tracker dedupes repeats of the same link).
    for campaign, step, segment, on_day, n in session.execute(
        select(*group, func.count())
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(window, Event.kind == "click")
        .group_by(*group)
    ):
        rows[(campaign, step, segment, on_day, "clicks")] = n
    link_id = Event.data["link_id"].as_integer()
    links = [
        {"campaign_id": c, "step_index": s, "link_id": link, "day": d, "n": n}
        for c, s, link, d, n in session.execute(
            select(Delivery.campaign_id, Delivery.step_index, link_id, day, func.count())
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(window, Event.kind == "click", link_id.is_not(None))
            .group_by(Delivery.campaign_id, Delivery.step_index, link_id, day)
        )
    ]
    read = int(session.scalar(select(func.count()).select_from(Event).where(window)) or 0)
    keys = ["campaign_id", "step_index", "segment_id", "day", "metric"]
    values = [dict(zip([*keys, "n"], [*k, n], strict=True)) for k, n in rows.items()]
    _upsert(session, ResultRollup, values, keys, ResultRollup.n, dialect)
    _upsert(session, LinkRollup, links, ["campaign_id", "step_index", "link_id", "day"], LinkRollup.n, dialect)
    mark.last_id = upto
    session.flush()
    return read


def _upsert(
    session: Session, model: Any, values: list[dict[str, Any]], keys: list[str], counter: Any, dialect: str
) -> None:
    """INSERT ... ON CONFLICT: add to the counter (or leave the row) when the key exists.
    Both databases speak the same clause (SQLite since 3.24)."""
    if not values:
        return
    for start in range(0, len(values), 1000):  # SQLite allows 32766 bound parameters
        chunk = values[start : start + 1000]
        insert = postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)
        statement = insert.values(chunk)
        if counter is None:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        else:
            statement = statement.on_conflict_do_update(index_elements=keys, set_={"n": counter + statement.excluded.n})
        session.execute(statement)


def delivery_counts(
    session: Session, campaign_id: str, since: datetime | None, until: datetime | None
) -> list[tuple[int, str, str, int]]:
    """``(step index, segment id, state, count)`` of the campaign's deliveries. With a period,
    only deliveries sent in it (or due in it, for those never sent)."""
    query = select(Delivery.step_index, Delivery.segment_id, Delivery.state, func.count()).where(
        Delivery.campaign_id == campaign_id
    )
    when = func.coalesce(Delivery.sent_at, Delivery.due_at)
    if since is not None:
        query = query.where(or_(Delivery.sent_at >= since, and_(Delivery.sent_at.is_(None), when >= since)))
    if until is not None:
        query = query.where(or_(Delivery.sent_at < until, and_(Delivery.sent_at.is_(None), when < until)))
    query = query.group_by(Delivery.step_index, Delivery.segment_id, Delivery.state)
    return [(int(s), str(g), str(st), int(n)) for s, g, st, n in session.execute(query)]


def rollup_counts(
    session: Session, campaign_id: str, since_day: str | None, until_day: str | None
) -> list[tuple[int, str, str, int]]:
    """``(step index, segment id, metric, count)`` from the rollup, days inclusive."""
    query = select(ResultRollup.step_index, ResultRollup.segment_id, ResultRollup.metric, func.sum(ResultRollup.n))
    query = query.where(ResultRollup.campaign_id == campaign_id)
    if since_day is not None:
        query = query.where(ResultRollup.day >= since_day)
    if until_day is not None:
        query = query.where(ResultRollup.day <= until_day)
    query = query.group_by(ResultRollup.step_index, ResultRollup.segment_id, ResultRollup.metric)
    return [(int(s), str(g), str(m), int(n or 0)) for s, g, m, n in session.execute(query)]


def top_links(
    session: Session, campaign_id: str, since_day: str | None, until_day: str | None, limit: int
) -> list[tuple[str, int]]:
    """``(url, unique clicks)`` of the campaign's most clicked links, most first."""
    total = func.sum(LinkRollup.n)
    query = (
        select(Link.url, total).join(Link, Link.id == LinkRollup.link_id).where(LinkRollup.campaign_id == campaign_id)
    )
    if since_day is not None:
        query = query.where(LinkRollup.day >= since_day)
    if until_day is not None:
        query = query.where(LinkRollup.day <= until_day)
    query = query.group_by(Link.url).order_by(total.desc(), Link.url).limit(limit)
    return [(str(url), int(n or 0)) for url, n in session.execute(query)]


def campaign_has_deliveries(session: Session, campaign_id: str) -> bool:
    return session.scalar(select(Delivery.id).where(Delivery.campaign_id == campaign_id).limit(1)) is not None


def failure_reasons(session: Session, campaign_id: str) -> Sequence[tuple[int, str, int]]:
    """``(step index, last error, count)`` of failed deliveries, whatever their segment
    (failures before a segment was chosen have none)."""
    query = (
        select(Delivery.step_index, Delivery.last_error, func.count())
        .where(Delivery.campaign_id == campaign_id, Delivery.state == "failed")
        .group_by(Delivery.step_index, Delivery.last_error)
    )
    return [(int(s), str(e or ""), int(n)) for s, e, n in session.execute(query)]
