"""How long the staff console's read operations take on PostgreSQL at scale (issue 14 asks for
pages under 300 ms with 1,000,000 subscribers and 6,000,000 deliveries).

    python bench/console_pages.py [--subscribers 100000]

Builds N subscribers, N enrollments and 6 N sent deliveries (one per step, every 2 days, so the
last 30 days hold a share of them), N/50 complaint events, then times each operation the pages
call (operations/console_reads.py; median of 5 runs after one warm-up) with the indexes on main
today. Prints a table; nothing is written to docs/ yet: the numbers are the baseline for the
indexes and rollups a later slice adds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    ROOT,
    copy_subscribers,
    enroll_ids,
    log,
    naive,
    postgres_database,
    sqlalchemy_url,
)


def build(conn: psycopg.Connection, subscribers: int) -> None:
    lo, hi = copy_subscribers(conn, 1, subscribers, BENCH_NOW - timedelta(days=60))
    enroll_ids(conn, lo, hi, BENCH_NOW - timedelta(days=60), BENCH_NOW)
    conn.commit()
    # Spread over the last 60 days: subscriber i's steps start i % 48 days ago.
    conn.execute(
        """
        INSERT INTO deliveries (enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id, state,
                                attempts, due_at, not_before, message_id, content_hash, last_error, created_at, sent_at)
        SELECT e.id, e.subscriber_id, %(campaign)s, 'step-' || s, s, 'trail+no-race', 'sent', 1, t, t, '', '', '', t, t
        FROM enrollments e CROSS JOIN generate_series(0, 5) AS s
        CROSS JOIN LATERAL (SELECT %(now)s::timestamp - (e.subscriber_id %% 48) * interval '1 day'
                                   + s * interval '2 days' AS t) AS at
        """,
        {"campaign": CAMPAIGN_ID, "now": naive(BENCH_NOW - timedelta(days=12))},
    )
    conn.execute(
        """
        INSERT INTO events (subscriber_id, delivery_id, kind, data, created_at)
        SELECT subscriber_id, id, 'complaint', '{}', sent_at + interval '1 hour'
        FROM deliveries WHERE step_index = 0 AND subscriber_id % 50 = 0
        """
    )
    conn.commit()
    log(f"{subscribers} subscribers, {6 * subscribers} deliveries")


def timed(what: Callable[[], Any], runs: int = 5) -> float:
    what()  # warm-up: caches, plans
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        what()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    args = parser.parse_args()
    from cadence.catalog import CampaignCatalog
    from cadence.db import console as store
    from cadence.db.migrate import upgrade
    from cadence.db.session import transaction
    from cadence.operations import console_reads

    with postgres_database() as url:
        upgrade(sqlalchemy_url(url))
        with psycopg.connect(url) as conn:
            build(conn, args.subscribers)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        catalog = CampaignCatalog(ROOT / "campaigns", ROOT / "templates")
        db = sqlalchemy_url(url)
        middle = args.subscribers // 2

        def run(op: Callable[[Any], Any]) -> Callable[[], Any]:
            def call() -> Any:
                with transaction(db) as session:
                    return op(session)

            return call

        since = BENCH_NOW - timedelta(days=29)
        rows = [
            ("dashboard", run(lambda s: console_reads.dashboard(s, catalog, BENCH_NOW))),
            ("- of which sent per day", run(lambda s: store.sent_per_day(s, since))),
            ("- of which totals by campaign", run(lambda s: store.delivery_totals_by_campaign(s))),
            ("- of which enrolled by campaign", run(lambda s: store.active_enrollments_by_campaign(s))),
            ("- of which failed in 30 days", run(lambda s: store.failed_since(s, since, limit=5))),
            ("- of which bounces, complaints", run(lambda s: store.events_since(s, since, ("complaint",)))),
            ("subscribers, first page", run(lambda s: console_reads.search_subscribers(s, ""))),
            ("subscribers, search one address", run(lambda s: console_reads.search_subscribers(s, f"runner{middle}@"))),
            ("subscriber profile", run(lambda s: console_reads.subscriber_profile(s, middle))),
            ("suppressions and bounces", run(lambda s: console_reads.suppressions_and_bounces(s))),
            ("audit log", run(lambda s: console_reads.audit_log(s))),
        ]
        print(f"\n{args.subscribers:,} subscribers, {6 * args.subscribers:,} deliveries (PostgreSQL)\n")
        print("| operation | median ms |\n|---|---|")
        for name, call in rows:
            print(f"| {name} | {timed(call):.1f} |")


if __name__ == "__main__":
    main()
