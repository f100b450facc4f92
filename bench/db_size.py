"""Database size per million deliveries on PostgreSQL, for the capacity guide (docs/deploy.md).

    python bench/db_size.py [--subscribers 100000]

Builds the lower-back-pain drip's full history for N subscribers: N subscribers, N enrollments
(completed), 6 N deliveries (one per step) that go ``queued -> sending -> sent`` by UPDATEs as
the send path does (so the heap carries the dead row versions autovacuum leaves as free space),
and N "open" events. Then VACUUM ANALYZE, and the size of each table with its indexes and TOAST
(pg_total_relation_size), before and after VACUUM FULL (the compact floor). Values are realistic:
Message-IDs as make_message_id writes them, 64-hex content hashes, lease tokens, JSON attributes.
Writes its section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import psycopg

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    copy_subscribers,
    enroll_ids,
    log,
    naive,
    postgres_database,
    sqlalchemy_url,
    table,
    write_section,
)

TABLES = ("deliveries", "subscribers", "enrollments", "events", "suppressions", "links")


def _campaign_ids() -> tuple[list[str], list[str]]:
    """The drip's real step and segment ids (their lengths are part of a row's size)."""
    from _common import ROOT
    from cadence.files.catalog import CampaignCatalog

    campaign = CampaignCatalog(ROOT / "campaigns").get(CAMPAIGN_ID)
    return [step.id for step in campaign.steps], [segment.id for segment in campaign.segments]


STEPS, SEGMENTS = _campaign_ids()


def build(conn: psycopg.Connection, subscribers: int) -> None:
    lo, hi = copy_subscribers(conn, 1, subscribers, BENCH_NOW)
    enroll_ids(conn, lo, hi, BENCH_NOW, BENCH_NOW)
    conn.commit()
    log(f"{subscribers} subscribers and enrollments")
    # One row per (enrollment, step), as the tick inserts them: queued.
    conn.execute(
        """
        INSERT INTO deliveries (enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id,
                                state, attempts, due_at, not_before, enqueued_at, message_id, content_hash,
                                last_error, created_at)
        SELECT e.id, e.subscriber_id, %(campaign)s, (%(steps)s::text[])[s + 1], s, '', 'queued', 0,
               %(now)s::timestamp + s * interval '2 days', %(now)s::timestamp + s * interval '2 days',
               %(now)s, '', '', '', %(now)s::timestamp + s * interval '2 days'
        FROM enrollments e CROSS JOIN generate_series(0, %(last)s) AS s
        """,
        {"campaign": CAMPAIGN_ID, "steps": STEPS, "last": len(STEPS) - 1, "now": naive(BENCH_NOW)},
    )
    conn.commit()
    log("deliveries queued")
    # The claim: leased to a worker.
    conn.execute(
        "UPDATE deliveries SET state = 'sending', attempts = 1, lease_token = substr(md5(id::text), 1, 16),"
        " lease_expires_at = not_before + interval '10 minutes'"
    )
    conn.commit()
    # The ledger's sent mark, with what a sent row carries.
    conn.execute(
        """
        UPDATE deliveries SET state = 'sent', sent_at = not_before + interval '1 second',
               segment_id = (%(segments)s::text[])[subscriber_id %% 3 + 1],
               content_hash = md5(step_id) || md5(step_id || 'x'),
               message_id = '<d' || id || '.' || substr(md5(id::text || 'k'), 1, 16) || '@precisionbodywork.example>',
               lease_expires_at = NULL
        """,
        {"segments": SEGMENTS},
    )
    conn.execute(
        "UPDATE enrollments SET state = 'completed', next_step = %(steps)s, next_send_at = NULL,"
        " last_sent_at = %(at)s, ended_at = %(at)s, end_reason = 'all steps sent'",
        {"at": naive(BENCH_NOW + timedelta(days=12)), "steps": len(STEPS)},
    )
    conn.commit()
    log("deliveries sent, enrollments completed")
    conn.execute(
        """
        INSERT INTO events (subscriber_id, delivery_id, kind, data, created_at)
        SELECT subscriber_id, id, 'open', '{}', sent_at + interval '1 hour'
        FROM deliveries WHERE step_index = 0
        """
    )
    conn.commit()
    log("events")


def sizes(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """{table: (rows, total bytes with indexes and TOAST)}."""
    out = {}
    for name in TABLES:
        rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        size = conn.execute("SELECT pg_total_relation_size(%s)", (name,)).fetchone()[0]
        out[name] = (int(rows), int(size))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    args = parser.parse_args()
    started = time.monotonic()
    with postgres_database() as url:
        from cadence.db.migrate import upgrade

        upgrade(sqlalchemy_url(url))
        with psycopg.connect(url) as conn:
            build(conn, args.subscribers)
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            after_vacuum = sizes(conn)
            conn.execute("VACUUM FULL ANALYZE")
            compact = sizes(conn)
            server = conn.execute("SHOW server_version").fetchone()[0]
    deliveries = after_vacuum["deliveries"][0]
    rows = []
    for name in TABLES:
        n, size = after_vacuum[name]
        _, floor = compact[name]
        per_row = f"{size / n:.0f}" if n else ""
        rows.append([name, f"{n:,}", f"{size / 2**20:.1f}", f"{floor / 2**20:.1f}", per_row])
    total = sum(s for _, s in after_vacuum.values())
    total_compact = sum(s for _, s in compact.values())
    per_million = total / deliveries * 1e6 / 2**30
    per_million_compact = total_compact / deliveries * 1e6 / 2**30
    ledger_per_million = after_vacuum["deliveries"][1] / deliveries * 1e6 / 2**30
    body = "\n".join(
        [
            "## Database size per million deliveries",
            "",
            f"`python bench/db_size.py --subscribers {args.subscribers}` ({time.monotonic() - started:.0f} s wall), "
            f"PostgreSQL {server}.",
            "",
            f"The lower-back-pain drip's whole history for {args.subscribers:,} subscribers: "
            f"{deliveries:,} deliveries (6 steps each) taken queued -> sending -> sent by UPDATEs as the send "
            "path does, enrollments completed, one open event per subscriber. Sizes include indexes and TOAST "
            "(pg_total_relation_size), after VACUUM ANALYZE (dead row versions left as reusable free space, as "
            "autovacuum leaves them) and after VACUUM FULL (the compact floor). Updating every row in one "
            "statement is the worst case for the first figure; a real send updates batch by batch and "
            "autovacuum reuses the space between, so real tables fall between the two columns.",
            "",
            table(["table", "rows", "MiB after VACUUM", "MiB after VACUUM FULL", "bytes per row"], rows),
            "",
            f"**Per million deliveries: {per_million:.2f} GiB for the whole database** "
            f"({per_million_compact:.2f} GiB compacted); the deliveries table alone (the ledger, with its "
            f"indexes) {ledger_per_million:.2f} GiB. Subscribers and enrollments scale with the list, not with "
            "the sends: a list of 166,667 runners who each received the 6 emails is this million.",
        ]
    )
    print(body)
    write_section("db_size", body)


if __name__ == "__main__":
    main()
