"""The SQL of campaign results (``cadence report``, issue 13 item 6).

A report is **rollup + live**: counts folded earlier into small tables (``result_rollups``,
``link_rollups``: per campaign, step, segment, day and metric), plus the rows that arrived
since, counted live. Counting everything live joined 6 million deliveries and millions of
events on every report (4 s, bench/report_scale.py); the rollup makes it a few hundred rows.

What is folded, and when:

- **Events** are append-only: each fold reads the events with ids above the watermark.
  Unique opens (clicks, bounces...) are "the first of its kind for its delivery", found with
  ``ix_events_delivery_kind`` instead of a DISTINCT.
- **Deliveries** change state, so a fold counts those already sent, failed or skipped (final
  states) and notes the others in ``rollup_pending``; they are counted live, at their current
  state, until a later fold finds them final.

Why no row can be skipped: ids come from a sequence, and a transaction may take id 100 and
commit after another committed 101; a fold that stopped at 101 would never see 100. So a fold
never goes further than a *candidate* bound read at least ``lag`` earlier (database time):
by then every transaction that could still hold a smaller id has long ended (ticks and send
batches take seconds, not minutes). Rows above the bound are counted live, so the report is
exact either way; the lag only decides how much is live. SQLite runs one writer at a time
(BEGIN IMMEDIATE), so there the bound is simply the largest id.

Erasing a subscriber deletes their deliveries and events; counts already folded stay (they
hold no person).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Label, and_, delete, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from cadence.core.drip_policy import GOAL_REACHED
from cadence.db.models import (
    Delivery,
    Event,
    Link,
    LinkRollup,
    ResultRollup,
    RollupPending,
    RollupWatermark,
)

# "exit_goal": a subscriber reached the campaign's exit goal, on the row of the last email they
# had been sent (db/send_batch.record_goal_reached): one per enrollment, counted like the rest.
UNIQUE_KINDS = ("open", "click", "unsubscribe", "hard_bounce", "soft_bounce", "complaint", "exit_goal")
FINAL = ("sent", "failed", "skipped")
# "goal_skipped": the skipped deliveries among "skipped" that were not sent because the subscriber
# had reached the exit goal (core.drip_policy.GOAL_REACHED). Counted besides "skipped", not
# instead: the campaign list's state counts read "skipped" alone. Without it the report showed
# such a row as an unexplained skip with no segment (the marketer's cold trial, results item 1).
GOAL_SKIPPED = "goal_skipped"
DEFAULT_LAG = timedelta(minutes=10)

Key = tuple[str, int, str, str, str]  # campaign, step index, segment, day, metric


def _day(session: Session, column: Any) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of a stored (naive UTC) timestamp, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.substr(column, 1, 10)


def _bound(session: Session, name: str, max_id: int, lag: timedelta) -> tuple[int, int]:
    """``(start, upto)``: fold ids in (start, upto]. Locks the watermark row (a second report
    folding at once waits, then finds nothing left) and moves it to `upto`."""
    query = select(RollupWatermark).where(RollupWatermark.name == name).with_for_update()
    mark = session.scalar(query)
    if mark is None:
        _upsert(session, RollupWatermark, [{"name": name, "last_id": 0, "candidate_id": 0}], ["name"], None)
        mark = session.scalar(query)
    assert mark is not None
    start = int(mark.last_id)
    if session.get_bind().dialect.name != "postgresql" or lag <= timedelta(0):
        upto = max(start, max_id)
    else:
        now = session.scalar(select(func.now()))  # database time: the same for every process
        assert isinstance(now, datetime)
        aged = mark.candidate_at is not None and now - mark.candidate_at >= lag
        upto = max(start, int(mark.candidate_id)) if aged else start
        if mark.candidate_at is None or aged or max_id < int(mark.candidate_id):
            mark.candidate_id, mark.candidate_at = max_id, now
    mark.last_id = upto
    return start, upto


def watermark(session: Session, name: str) -> int:
    return int(session.scalar(select(RollupWatermark.last_id).where(RollupWatermark.name == name)) or 0)


def fold(session: Session, *, lag: timedelta = DEFAULT_LAG) -> int:
    """Fold what is old enough into the rollups; returns the rows read (events and deliveries)."""
    read = 0
    max_event = int(session.scalar(select(func.coalesce(func.max(Event.id), 0))) or 0)
    start, upto = _bound(session, "events", max_event, lag)
    if upto > start:
        counts, links = event_counts(session, and_(Event.id > start, Event.id <= upto))
        _add(session, counts, links)
        read += int(session.scalar(select(func.count()).where(Event.id > start, Event.id <= upto)) or 0)
    max_delivery = int(session.scalar(select(func.coalesce(func.max(Delivery.id), 0))) or 0)
    start, upto = _bound(session, "deliveries", max_delivery, lag)
    # Pending rows that reached a final state (or were erased) leave the pending list. The
    # query starts from the (small) pending table: an IN (subquery) could make the planner scan
    # the whole ledger.
    _add(session, _delivery_rollup(session, Delivery.state.in_(FINAL), pending_only=True), [])
    session.execute(
        delete(RollupPending).where(
            ~exists().where(Delivery.id == RollupPending.delivery_id, Delivery.state.not_in(FINAL))
        )
    )
    if upto > start:
        window = and_(Delivery.id > start, Delivery.id <= upto)
        _add(session, _delivery_rollup(session, and_(window, Delivery.state.in_(FINAL))), [])
        ids = [
            {"delivery_id": i} for i in session.scalars(select(Delivery.id).where(window, Delivery.state.not_in(FINAL)))
        ]
        _upsert(session, RollupPending, ids, ["delivery_id"], None)
        read += int(session.scalar(select(func.count()).where(window)) or 0)
    session.flush()
    return read


def _delivery_rollup(session: Session, where: ColumnElement[bool], *, pending_only: bool = False) -> Counter[Key]:
    day = _day(session, func.coalesce(Delivery.sent_at, Delivery.due_at))
    group = (Delivery.campaign_id, Delivery.step_index, Delivery.segment_id, day, Delivery.state, _goal_skip())
    counts: Counter[Key] = Counter()
    query = select(*group, func.count())
    if pending_only:
        query = query.select_from(RollupPending).join(Delivery, Delivery.id == RollupPending.delivery_id)
    for campaign, step, segment, on_day, state, goal, n in session.execute(query.where(where).group_by(*group)):
        counts[(campaign, step, segment, on_day, state)] += n
        if goal:
            counts[(campaign, step, segment, on_day, GOAL_SKIPPED)] += n
    return counts


def _goal_skip() -> Label[bool]:
    """True for a delivery skipped because its subscriber had reached the exit goal. Labelled,
    so GROUP BY names the column instead of repeating the expression with its own bound
    parameters (PostgreSQL would not match the two)."""
    return and_(Delivery.state == "skipped", Delivery.last_error == GOAL_REACHED).label("goal_skip")


def event_counts(
    session: Session, where: ColumnElement[bool], campaign_id: str | None = None
) -> tuple[Counter[Key], list[dict[str, Any]]]:
    """Event metrics of the events `where` selects: unique per delivery, every click, and
    clicks per link (one per delivery and link: the tracker dedupes repeats)."""
    if campaign_id is not None:
        where = and_(where, Delivery.campaign_id == campaign_id)
    day = _day(session, Event.created_at)
    earlier = aliased(Event)
    first_of_kind = ~exists().where(
        earlier.delivery_id == Event.delivery_id, earlier.kind == Event.kind, earlier.id < Event.id
    )
    group = (Delivery.campaign_id, Delivery.step_index, Delivery.segment_id, day)
    counts: Counter[Key] = Counter()
    for campaign, step, segment, on_day, kind, n in session.execute(
        select(*group, Event.kind, func.count())
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(where, Event.kind.in_(UNIQUE_KINDS), first_of_kind)
        .group_by(*group, Event.kind)
    ):
        counts[(campaign, step, segment, on_day, kind)] += n
    for campaign, step, segment, on_day, n in session.execute(
        select(*group, func.count())
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(where, Event.kind == "click")
        .group_by(*group)
    ):
        counts[(campaign, step, segment, on_day, "clicks")] += n
    link_id = Event.data["link_id"].as_integer()
    links = [
        {"campaign_id": c, "step_index": s, "link_id": link, "day": d, "n": n}
        for c, s, link, d, n in session.execute(
            select(Delivery.campaign_id, Delivery.step_index, link_id, day, func.count())
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(where, Event.kind == "click", link_id.is_not(None))
            .group_by(Delivery.campaign_id, Delivery.step_index, link_id, day)
        )
    ]
    return counts, links


def _add(session: Session, counts: Counter[Key], links: list[dict[str, Any]]) -> None:
    keys = ["campaign_id", "step_index", "segment_id", "day", "metric"]
    values = [dict(zip([*keys, "n"], [*k, n], strict=True)) for k, n in counts.items() if n]
    _upsert(session, ResultRollup, values, keys, ResultRollup.n)
    _upsert(session, LinkRollup, links, ["campaign_id", "step_index", "link_id", "day"], LinkRollup.n)


def _upsert(session: Session, model: Any, values: list[dict[str, Any]], keys: list[str], counter: Any) -> None:
    """INSERT ... ON CONFLICT: add to the counter (or leave the row) when the key exists.
    Both databases speak the same clause (SQLite since 3.24)."""
    dialect = session.get_bind().dialect.name
    for start in range(0, len(values), 1000):  # SQLite allows 32766 bound parameters
        insert = postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)
        statement = insert.values(values[start : start + 1000])
        if counter is None:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        else:
            statement = statement.on_conflict_do_update(index_elements=keys, set_={"n": counter + statement.excluded.n})
        session.execute(statement)


def snapshot(session: Session) -> None:
    """Read the rollup and the live rows as of one instant (PostgreSQL: REPEATABLE READ; a fold
    committing between two reads would otherwise count its rows twice or not at all). Call
    first in a fresh transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


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


def live_delivery_counts(
    session: Session, campaign_id: str, since: datetime | None, until: datetime | None
) -> list[tuple[int, str, str, int]]:
    """``(step index, segment id, state, count)`` of the deliveries not in the rollup (and
    ``goal_skipped``, a part of ``skipped``: see :data:`GOAL_SKIPPED`): above
    the watermark (a primary-key range), and pending (a join from the small pending table).
    With a period, those sent in it (or due in it, if unsent)."""
    when = func.coalesce(Delivery.sent_at, Delivery.due_at)
    period = [Delivery.campaign_id == campaign_id]
    if since is not None:
        period.append(when >= since)
    if until is not None:
        period.append(when < until)
    columns = (Delivery.step_index, Delivery.segment_id, Delivery.state, _goal_skip())
    counts: Counter[tuple[int, str, str]] = Counter()
    above = select(*columns, func.count()).where(Delivery.id > watermark(session, "deliveries"), *period)
    pending = (
        select(*columns, func.count())
        .select_from(RollupPending)
        .join(Delivery, Delivery.id == RollupPending.delivery_id)
        .where(*period)
    )
    for query in (above, pending):
        for step, segment, state, goal, n in session.execute(query.group_by(*columns)):
            counts[(int(step), str(segment), str(state))] += int(n)
            if goal:
                counts[(int(step), str(segment), GOAL_SKIPPED)] += int(n)
    return [(s, g, st, n) for (s, g, st), n in counts.items()]


def live_event_counts(
    session: Session, campaign_id: str, since: datetime | None, until: datetime | None
) -> tuple[list[tuple[int, str, str, int]], list[tuple[int, int]]]:
    """Event metrics above the watermark: ``(step, segment, metric, count)`` and ``(link id, count)``."""
    where = Event.id > watermark(session, "events")
    if since is not None:
        where = and_(where, Event.created_at >= since)
    if until is not None:
        where = and_(where, Event.created_at < until)
    counts, links = event_counts(session, where, campaign_id)
    merged: Counter[tuple[int, str, str]] = Counter()
    for (_, step, segment, _, metric), n in counts.items():
        merged[(step, segment, metric)] += n
    per_link: Counter[int] = Counter()
    for row in links:
        per_link[int(row["link_id"])] += int(row["n"])
    return [(s, g, m, n) for (s, g, m), n in merged.items()], list(per_link.items())


def link_counts(
    session: Session, campaign_id: str, since_day: str | None, until_day: str | None
) -> list[tuple[int, int]]:
    """``(link id, unique clicks)`` from the rollup."""
    query = select(LinkRollup.link_id, func.sum(LinkRollup.n)).where(LinkRollup.campaign_id == campaign_id)
    if since_day is not None:
        query = query.where(LinkRollup.day >= since_day)
    if until_day is not None:
        query = query.where(LinkRollup.day <= until_day)
    return [(int(i), int(n or 0)) for i, n in session.execute(query.group_by(LinkRollup.link_id))]


def link_urls(session: Session, link_ids: list[int]) -> dict[int, str]:
    if not link_ids:
        return {}
    return {int(i): str(u) for i, u in session.execute(select(Link.id, Link.url).where(Link.id.in_(link_ids)))}


def delivery_kind(session: Session, campaign_id: str) -> str | None:
    """``drip`` or ``newsletter`` (the ledger holds both, issue 13 item 1), None without rows.
    One row by the (campaign, ...) index: a newsletter's id is its "campaign" id."""
    query = select(Delivery.kind).where(Delivery.campaign_id == campaign_id).limit(1)
    kind = session.scalar(query)
    return None if kind is None else str(kind)


def daily_counts(
    session: Session, campaign_id: str, since: datetime | None, until: datetime | None
) -> list[tuple[str, str, int]]:
    """``(day, metric, count)`` for the per-day series, rollup + live like the report: the
    rollup already has a day column (a few hundred rows per campaign); the live part is the
    same watermark range and pending join as :func:`live_delivery_counts` and
    :func:`live_event_counts`, grouped by day instead of by step. Never a scan of the ledger."""
    since_day = since.date().isoformat() if since else None
    until_day = (until.date() - timedelta(days=1)).isoformat() if until else None
    counts: Counter[tuple[str, str]] = Counter()
    query = select(ResultRollup.day, ResultRollup.metric, func.sum(ResultRollup.n))
    query = query.where(ResultRollup.campaign_id == campaign_id)
    if since_day is not None:
        query = query.where(ResultRollup.day >= since_day)
    if until_day is not None:
        query = query.where(ResultRollup.day <= until_day)
    for on_day, metric, n in session.execute(query.group_by(ResultRollup.day, ResultRollup.metric)):
        counts[(str(on_day), str(metric))] += int(n or 0)
    when = func.coalesce(Delivery.sent_at, Delivery.due_at)
    period = [Delivery.campaign_id == campaign_id]
    if since is not None:
        period.append(when >= since)
    if until is not None:
        period.append(when < until)
    day = _day(session, when)
    above = select(day, Delivery.state, func.count()).where(Delivery.id > watermark(session, "deliveries"), *period)
    pending = (
        select(day, Delivery.state, func.count())
        .select_from(RollupPending)
        .join(Delivery, Delivery.id == RollupPending.delivery_id)
        .where(*period)
    )
    for live in (above, pending):
        for sent_day, state, n in session.execute(live.group_by(day, Delivery.state)):
            counts[(str(sent_day), "queued" if state == "sending" else str(state))] += int(n)
    where = Event.id > watermark(session, "events")
    if since is not None:
        where = and_(where, Event.created_at >= since)
    if until is not None:
        where = and_(where, Event.created_at < until)
    events, _ = event_counts(session, where, campaign_id)
    for (_, _, _, event_day, metric), n in events.items():
        counts[(str(event_day), metric)] += n
    return [(d, m, n) for (d, m), n in sorted(counts.items())]


def failure_reasons(session: Session, campaign_id: str, limit: int = 50) -> list[tuple[int, str, int]]:
    """``(step index, last error, count)`` of failed deliveries, whatever their segment
    (failures before a segment was chosen have none). Failures are few; the results index
    finds them by (campaign, step, segment, state) without reading the sent rows."""
    query = (
        select(Delivery.step_index, Delivery.last_error, func.count())
        .where(Delivery.campaign_id == campaign_id, Delivery.state == "failed")
        .group_by(Delivery.step_index, Delivery.last_error)
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(int(s), str(e or ""), int(n)) for s, e, n in session.execute(query)]


# --- the console's dashboard and campaign list (issue 14: pages under 300 ms at 6M deliveries) --
# The same rollup + live split as the report, over every campaign at once: the rollup is a few
# hundred rows per campaign, the live part a primary-key range above the watermark and the small
# pending table. Exact for the same reasons as the report (module docstring), read in one
# snapshot (call :func:`snapshot` first). Erased subscribers' emails stay counted, as in the
# report: they were sent.


def sent_per_day(session: Session, since: datetime) -> dict[str, int]:
    """``{"2026-12-01": 12, ...}``: deliveries (every campaign and kind) sent per UTC day since
    `since` (a UTC midnight); days with none are absent."""
    counts: Counter[str] = Counter()
    since_day = since.date().isoformat()
    rollup = (
        select(ResultRollup.day, func.sum(ResultRollup.n))
        .where(ResultRollup.metric == "sent", ResultRollup.day >= since_day)
        .group_by(ResultRollup.day)
    )
    for on_day, n in session.execute(rollup):
        counts[str(on_day)] += int(n or 0)
    day = _day(session, Delivery.sent_at)
    sent = (Delivery.state == "sent", Delivery.sent_at >= since)
    above = select(day, func.count()).where(Delivery.id > watermark(session, "deliveries"), *sent)
    pending = (
        select(day, func.count())
        .select_from(RollupPending)
        .join(Delivery, Delivery.id == RollupPending.delivery_id)
        .where(*sent)
    )
    for live in (above, pending):
        for on_day, n in session.execute(live.group_by(day)):
            counts[str(on_day)] += int(n)
    return dict(counts)


def state_counts(session: Session) -> dict[str, Counter[str]]:
    """``{campaign_id: Counter({"sent": n, "failed": n, "skipped": n, "queued": n, ...})}``
    over the whole ledger (every kind: a newsletter's id and the transactional pseudo-campaign
    are campaign ids too); ``sending`` counts as queued (a worker holds it)."""
    totals: dict[str, Counter[str]] = {}
    rollup = (
        select(ResultRollup.campaign_id, ResultRollup.metric, func.sum(ResultRollup.n))
        .where(ResultRollup.metric.in_(FINAL))
        .group_by(ResultRollup.campaign_id, ResultRollup.metric)
    )
    for campaign_id, metric, n in session.execute(rollup):
        totals.setdefault(str(campaign_id), Counter())[str(metric)] += int(n or 0)
    columns = (Delivery.campaign_id, Delivery.state)
    above = select(*columns, func.count()).where(Delivery.id > watermark(session, "deliveries"))
    pending = select(*columns, func.count()).select_from(RollupPending).join(
        Delivery, Delivery.id == RollupPending.delivery_id
    )
    for live in (above, pending):
        for campaign_id, state, n in session.execute(live.group_by(*columns)):
            key = "queued" if state == "sending" else str(state)
            totals.setdefault(str(campaign_id), Counter())[key] += int(n)
    return totals


def campaign_ids(session: Session) -> set[str]:
    """Every campaign id of the ledger (any kind), from the rollups (a deleted row's campaign
    stays known: its emails were sent) and the rows not folded yet."""
    ids = set(session.scalars(select(ResultRollup.campaign_id).distinct()))
    above = select(Delivery.campaign_id).where(Delivery.id > watermark(session, "deliveries")).distinct()
    pending = (
        select(Delivery.campaign_id)
        .select_from(RollupPending)
        .join(Delivery, Delivery.id == RollupPending.delivery_id)
        .distinct()
    )
    for live in (above, pending):
        ids |= {str(i) for i in session.scalars(live)}
    return ids
