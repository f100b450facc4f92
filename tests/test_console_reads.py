"""The console's dashboard and campaign list read their delivery counts from the results
rollups plus the rows not folded yet (issue 14, pages under 300 ms at 6,000,000 deliveries).
Here, on real SQLite and PostgreSQL, the numbers are compared with a live count of the ledger
before any fold, after one, and with rows added and changed since; and the subscriber search's
filters and keyset pages."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cadence.config import load_settings
from cadence.db import campaign_states, enrollment_tallies
from cadence.db.migrate import upgrade
from cadence.db.models import Delivery, Enrollment, EnrollmentTally, Event, Subscriber, SubscriberTag
from cadence.db.session import transaction
from cadence.db.transactional import TRANSACTIONAL_CAMPAIGN
from cadence.errors import InputError
from cadence.files.catalog import CampaignCatalog
from cadence.operations import console_reads
from cadence.operations.campaign_overview import campaign_summaries
from cadence.operations.results import catch_up
from tests.support.cluster import ROOT, cadence_env
from tests.support.staff import CAMPAIGN, T0, seed

NOW = T0 + timedelta(days=3)
CATALOG = CampaignCatalog(ROOT / "campaigns", ROOT / "templates")


def _delivery(
    subscriber_id: int, campaign: str, state: str, at: datetime, *, kind: str = "drip", step: int = 5
) -> Delivery:
    return Delivery(
        enrollment_id=None,
        subscriber_id=subscriber_id,
        campaign_id=campaign,
        step_id=f"step-{step}",
        step_index=step,
        segment_id="trail+no-race",
        kind=kind,
        state=state,
        attempts=1,
        due_at=at,
        not_before=at,
        message_id="",
        content_hash="",
        last_error="",
        created_at=at,
        sent_at=at if state == "sent" else None,
    )


def live(session: Session, since: datetime) -> dict[str, Any]:
    """What the dashboard and the campaign list show, counted from the ledger itself."""
    per_day: Counter[str] = Counter()
    for sent_at in session.scalars(select(Delivery.sent_at).where(Delivery.state == "sent")):
        if sent_at >= since:
            per_day[sent_at.date().isoformat()] += 1
    states: dict[str, Counter[str]] = {}
    for campaign, state, n in session.execute(
        select(Delivery.campaign_id, Delivery.state, func.count()).group_by(Delivery.campaign_id, Delivery.state)
    ):
        states.setdefault(campaign, Counter())["queued" if state == "sending" else state] += n
    people: dict[str, tuple[int, int, int]] = {}
    for campaign, state, next_send_at in session.execute(
        select(Enrollment.campaign_id, Enrollment.state, Enrollment.next_send_at)
    ):
        total, active, waiting = people.get(campaign, (0, 0, 0))
        on = state == "active"
        people[campaign] = (total + 1, active + on, waiting + (on and next_send_at is not None))
    drips = set(session.scalars(select(Enrollment.campaign_id).distinct()))
    drips |= set(session.scalars(select(Delivery.campaign_id).where(Delivery.kind == "drip").distinct()))
    return {"per_day": dict(per_day), "states": states, "drips": drips, "people": people}


def shown(database_url: str) -> dict[str, Any]:
    board = console_reads.dashboard(partial(transaction, database_url), CATALOG, NOW)
    since = datetime.combine(NOW.date() - timedelta(days=console_reads.DAYS - 1), time(), UTC)
    with transaction(database_url) as session:
        expected = live(session, since)
        drips = campaign_states.known_campaign_ids(session)
    per_day = {day: n for day, n in board.sent_per_day if n}
    return {"board": board, "per_day": per_day, "expected": expected, "drips": drips}


def check(database_url: str, env: dict[str, str]) -> None:
    got = shown(database_url)
    board, expected = got["board"], got["expected"]
    assert got["per_day"] == expected["per_day"]
    assert board.sent_total == sum(expected["per_day"].values())
    for row in board.campaigns:
        counts = expected["states"].get(row.id, Counter())
        assert (row.sent, row.queued, row.failed) == (counts["sent"], counts["queued"], counts["failed"]), row.id
    assert got["drips"] == expected["drips"]
    for row in board.campaigns:
        assert row.active == expected["people"].get(row.id, (0, 0, 0))[1], row.id
    for summary in campaign_summaries(load_settings(env)):
        people = (summary.enrolled, summary.active, summary.waiting)
        assert people == expected["people"].get(summary.id, (0, 0, 0)), summary.id
        counts = expected["states"].get(summary.id, Counter())
        found = (summary.sent, summary.queued, summary.failed, summary.skipped)
        assert found == (counts["sent"], counts["queued"], counts["failed"], counts["skipped"]), summary.id


def test_dashboard_and_campaign_list_counts_from_the_rollups_equal_a_live_count(
    database_url: str, tmp_path: Any
) -> None:
    upgrade(database_url)
    env = cadence_env(tmp_path / "data", CADENCE_DATABASE_URL=database_url)
    with transaction(database_url) as session:
        seed(session)
        ann = session.scalar(select(Subscriber.id).where(Subscriber.email_key == "ann@example.com"))
        assert ann is not None
        # Another drip whose file is gone, a transactional email, an email still queued, and
        # sends on several days, one before the dashboard's 30 days.
        session.add_all(
            [
                _delivery(ann, "retired-course", "sent", NOW - timedelta(days=40)),
                _delivery(ann, "retired-course", "skipped", NOW - timedelta(days=2)),
                _delivery(ann, TRANSACTIONAL_CAMPAIGN, "sent", NOW - timedelta(hours=1), kind="transactional"),
                _delivery(ann, CAMPAIGN, "queued", NOW, step=4),
            ]
        )
    # The dashboard folds first, with the 10-minute lag on PostgreSQL: there, nothing is old
    # enough yet and all of it is counted live (SQLite folds up to the last id at once).
    check(database_url, env)
    catch_up(partial(transaction, database_url), lag=timedelta(0))
    check(database_url, env)  # all of it from the rollups, the queued row from the pending list

    # After the fold: the queued email is sent, new rows arrive, an event comes in.
    with transaction(database_url) as session:
        session.execute(update(Delivery).where(Delivery.state == "queued").values(state="sent", sent_at=NOW))
        session.add_all(
            [
                _delivery(ann, CAMPAIGN, "sent", NOW - timedelta(days=1), step=6),
                _delivery(ann, CAMPAIGN, "failed", NOW - timedelta(days=1), step=7),
                _delivery(ann, "retired-course", "queued", NOW, step=3),
            ]
        )
        session.add(Event(subscriber_id=ann, delivery_id=None, kind="complaint", data={}, created_at=NOW))
    check(database_url, env)
    catch_up(partial(transaction, database_url), lag=timedelta(0))
    check(database_url, env)
    board = shown(database_url)["board"]
    assert board.complaint.count == 2 and board.bounce.count == 1  # events are counted live, by an index


def _people(session: Session, n: int) -> list[int]:
    ids = []
    for i in range(n):
        person = Subscriber(
            email=f"walker{i}@example.com",
            email_key=f"walker{i}@example.com",
            first_name="Pat" if i % 2 else "Sam",
            attributes={},
            timezone="UTC",
            status="unsubscribed" if i % 3 == 0 else "active",
            source="test",
            created_at=T0,
            updated_at=T0,
            consent={},
        )
        session.add(person)
        session.flush()
        ids.append(person.id)
    return ids


def test_the_subscriber_search_filters_and_pages_by_id(database_url: str) -> None:
    upgrade(database_url)
    with transaction(database_url) as session:
        ids = _people(session, 120)
        for i in ids[:7]:
            session.add(SubscriberTag(subscriber_id=i, tag="vip", created_at=T0))
    with transaction(database_url) as session:
        first = console_reads.search_subscribers(session, "")
        assert first.total == 120 and not first.capped and first.first
        assert [s.id for s in first.subscribers] == sorted(ids, reverse=True)[:50]
        second = console_reads.search_subscribers(session, "", before=first.next_before)
        third = console_reads.search_subscribers(session, "", before=second.next_before)
        assert [s.id for s in second.subscribers] == sorted(ids, reverse=True)[50:100]
        assert [s.id for s in third.subscribers] == sorted(ids, reverse=True)[100:] and third.next_before is None
        pats = console_reads.search_subscribers(session, "PAT", filters=console_reads.SearchFilters("unsubscribed"))
        odd_thirds = [i for n, i in enumerate(ids) if n % 2 and n % 3 == 0]
        assert sorted(s.id for s in pats.subscribers) == odd_thirds and pats.total == len(odd_thirds)
        vips = console_reads.search_subscribers(session, "walker", filters=console_reads.SearchFilters(tag=" VIP "))
        assert sorted(s.id for s in vips.subscribers) == ids[:7] and vips.filters.tag == "vip"
        # A whole address (its local part looked up, the rest checked) or its end: still "contains".
        assert [s.email for s in console_reads.search_subscribers(session, "ALKER1@Example.com").subscribers] == [
            "walker1@example.com"
        ]
        assert console_reads.search_subscribers(session, "1@example.com").total == 12  # 1, 11, 21 ... 111
        # LIKE wildcards in the text are literal.
        assert console_reads.search_subscribers(session, "walker_1%").total == 0
        with pytest.raises(InputError, match="status: 'gone' is not one of"):
            console_reads.search_subscribers(session, "", filters=console_reads.SearchFilters("gone"))
    capped = console_reads.COUNT_CAP
    console_reads.COUNT_CAP = 100  # the count stops at the cap (a module constant: patched here only)
    try:
        with transaction(database_url) as session:
            page = console_reads.search_subscribers(session, "")
            assert page.total == 100 and page.capped
            # Pages still reach every subscriber, past the capped count too.
            seen = [s.id for s in page.subscribers]
            while page.next_before is not None:
                page = console_reads.search_subscribers(session, "", before=page.next_before)
                seen += [s.id for s in page.subscribers]
        assert seen == sorted(seen, reverse=True) and len(seen) == 120
    finally:
        console_reads.COUNT_CAP = capped


def test_enrollment_tallies_stay_exact_under_concurrent_changes_cascades_and_compaction(postgres_url: str) -> None:
    """PostgreSQL keeps people per campaign and state with triggers (db/enrollment_tallies.py):
    a transaction still open while another one compacts, a bulk update, a rollback and the
    cascade of an erased subscriber all leave the sum equal to a live count."""
    upgrade(postgres_url)
    with transaction(postgres_url) as session:
        session.execute(delete(Enrollment))
        ids = _people(session, 30)

    def enroll(session: Session, people: list[int], campaign: str) -> None:
        for person in people:
            session.add(
                Enrollment(subscriber_id=person, campaign_id=campaign, state="active", next_step=0, enrolled_at=T0)
            )
        session.flush()

    def live_counts() -> dict[str, dict[tuple[str, bool], int]]:
        with transaction(postgres_url) as session:
            found: dict[str, dict[tuple[str, bool], int]] = {}
            for campaign, state, next_send_at in session.execute(
                select(Enrollment.campaign_id, Enrollment.state, Enrollment.next_send_at)
            ):
                key = (state, next_send_at is not None)
                found.setdefault(campaign, {}).setdefault(key, 0)
                found[campaign][key] += 1
            return found

    def tallied() -> dict[str, dict[tuple[str, bool], int]]:
        with transaction(postgres_url) as session:
            return enrollment_tallies.counts(session)

    with transaction(postgres_url) as session:
        enroll(session, ids[:20], "course-a")
    # A second transaction enrolls ten more and stays open while a third compacts and commits.
    with transaction(postgres_url) as open_one:
        enroll(open_one, ids[20:], "course-b")
        with transaction(postgres_url) as other:
            enroll(other, ids[:5], "course-b")
            other.execute(update(Enrollment).where(Enrollment.campaign_id == "course-a").values(next_send_at=NOW))
        previous, enrollment_tallies.COMPACT_AFTER = enrollment_tallies.COMPACT_AFTER, 0
        try:
            with transaction(postgres_url) as compacting:
                assert enrollment_tallies.compact(compacting) > 0
        finally:
            enrollment_tallies.COMPACT_AFTER = previous
    assert tallied() == live_counts()
    assert tallied()["course-b"] == {("active", False): 15}
    assert tallied()["course-a"] == {("active", True): 20}

    # A rolled-back change leaves nothing; an update of unrelated columns adds no row.
    with pytest.raises(RuntimeError), transaction(postgres_url) as session:
        session.execute(update(Enrollment).values(state="cancelled"))
        raise RuntimeError("roll back")
    with transaction(postgres_url) as session:
        before = session.scalar(select(func.count()).select_from(EnrollmentTally))
        session.execute(update(Enrollment).values(next_step=3))
        assert session.scalar(select(func.count()).select_from(EnrollmentTally)) == before
        session.execute(update(Enrollment).where(Enrollment.subscriber_id.in_(ids[:3])).values(state="completed"))
        session.execute(delete(Subscriber).where(Subscriber.id.in_(ids[25:])))  # erase: the enrollments cascade
    assert tallied() == live_counts()
    assert tallied()["course-a"] == {("active", True): 17, ("completed", True): 3}
