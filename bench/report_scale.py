"""`cadence report` at scale: 1,000,000 subscribers and 6,000,000 deliveries on PostgreSQL.

Usage: ``.venv/bin/python bench/report_scale.py [--subscribers N]`` (PostgreSQL at
CADENCE_BENCH_PG). Creates a database of its own, fills it with bulk SQL (generate_series:
INSERT ... SELECT, the non-unique indexes built after the load, as a restore would), runs the
report the way `cadence report` does, prints the timings, writes them to docs/performance.md
(section ``report_scale``) and drops the database.

The data: every subscriber went through the six first steps of lower-back-pain in one of its
six segments; 1% of deliveries failed; of the sent ones ~35% were opened, ~6% clicked (one of
five links, some twice), 0.2% unsubscribed, 0.5% hard- and 0.5% soft-bounced, 0.05% complained.
Events are spread over 30 days.

What is timed:

1. the first report after the load, which folds every delivery and event into the rollups (a
   one-time catch-up, as after upgrading to migration 0007);
2. the report with nothing new (what staff see every time; the target is < 1 s);
3. the report with 10,000 new events not yet folded (counted live), then folding them;
4. the report for one week (--since/--until);
4b. the report with the per-day series (--daily; --json has it too);
5. ``cadence report lower-back-pain --json`` as a subprocess (Python start-up included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    ROOT,
    cadence_env,
    log,
    machine_info,
    machine_markdown,
    postgres_database,
    sqlalchemy_url,
    table,
    write_section,
)

STEPS = 6
SEGMENTS = ("trail+race-soon", "trail+race", "trail+no-race", "everyday+race-soon", "everyday+race", "everyday+no-race")


def fill(url: str, subscribers: int) -> dict[str, float]:
    """Bulk-load the data set; returns seconds per phase."""
    import psycopg

    timings: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        # Non-unique indexes are built after the load (a pg_restore does the same).
        conn.execute("DROP INDEX ix_deliveries_failed, ix_deliveries_subscriber_id")
        conn.execute("DROP INDEX ix_events_delivery_kind, ix_events_delivery_id, ix_events_subscriber_id")
        phases = {
            "subscribers": """
                INSERT INTO subscribers (email, email_key, first_name, attributes, timezone, status, source,
                    created_at, updated_at, confirmed_at, soft_bounces, consent)
                SELECT 'runner' || i || '@example.com', 'runner' || i || '@example.com', 'Runner' || i,
                    json_build_object('terrain', CASE WHEN i %% 2 = 0 THEN 'trails' ELSE 'road' END),
                    'America/New_York', 'active', 'bench', %(start)s, %(start)s, %(start)s, 0, '{}'
                FROM generate_series(1, %(n)s) AS i""",
            "enrollments": """
                INSERT INTO enrollments (subscriber_id, campaign_id, state, next_step, enrolled_at, end_reason)
                SELECT id, %(campaign)s, 'active', 6, %(start)s, '' FROM subscribers""",
            "deliveries": """
                INSERT INTO deliveries (enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id,
                    kind, state, attempts, due_at, not_before, message_id, content_hash, last_error, created_at,
                    sent_at)
                SELECT e.id, e.subscriber_id, e.campaign_id, 'step-' || s, s,
                    CASE WHEN (e.id + s) %% 100 = 0 THEN '' ELSE (%(segments)s::text[])[1 + e.subscriber_id %% 6] END,
                    'drip', CASE WHEN (e.id + s) %% 100 = 0 THEN 'failed' ELSE 'sent' END, 1,
                    %(start)s + s * interval '2 days', %(start)s + s * interval '2 days', '', '',
                    CASE WHEN (e.id + s) %% 100 = 0 THEN '550 5.1.1 <x@example.com>: no such user' ELSE '' END,
                    %(start)s + s * interval '2 days',
                    CASE WHEN (e.id + s) %% 100 = 0 THEN NULL
                         ELSE %(start)s + s * interval '2 days' + (e.id %% 7200) * interval '1 second' END
                FROM enrollments e CROSS JOIN generate_series(0, 5) AS s""",
            "links": """
                INSERT INTO links (url, url_hash)
                SELECT 'https://precisionbodywork.example/guide/' || i, md5(i::text) || md5(i::text)
                FROM generate_series(1, 5) AS i""",
            "events": """
                INSERT INTO events (subscriber_id, delivery_id, kind, data, dedupe_key, created_at)
                SELECT d.subscriber_id, d.id, k.kind,
                    CASE WHEN k.kind = 'click'
                         THEN json_build_object('link_id', (SELECT min(id) FROM links) + (d.id + k.n) %% 5)
                         ELSE '{}'::json END,
                    NULL, d.sent_at + (1 + k.n) * interval '1 hour' + (d.id %% 20) * interval '1 day'
                FROM deliveries d
                JOIN (VALUES ('open', 0, 35), ('click', 0, 6), ('click', 1, 2), ('unsubscribe', 0, 0),
                             ('hard_bounce', 0, 0), ('soft_bounce', 0, 0), ('complaint', 0, 0))
                     AS k(kind, n, pct) ON true
                WHERE d.state = 'sent' AND (
                    (k.pct > 0 AND (d.id * 7 + k.n * 13) %% 100 < k.pct)
                    OR (k.kind = 'unsubscribe' AND d.id %% 500 = 1)
                    OR (k.kind = 'hard_bounce' AND d.id %% 200 = 2)
                    OR (k.kind = 'soft_bounce' AND d.id %% 200 = 3)
                    OR (k.kind = 'complaint' AND d.id %% 2000 = 4))
                ORDER BY d.id""",
            "indexes": """
                CREATE INDEX ix_deliveries_failed ON deliveries (campaign_id, step_index) WHERE state = 'failed';
                CREATE INDEX ix_deliveries_subscriber_id ON deliveries (subscriber_id);
                CREATE INDEX ix_events_delivery_kind ON events (delivery_id, kind, id);
                CREATE INDEX ix_events_delivery_id ON events (delivery_id);
                CREATE INDEX ix_events_subscriber_id ON events (subscriber_id)""",
            "vacuum analyze": "VACUUM ANALYZE",
        }
        params = {
            "n": subscribers,
            "start": BENCH_NOW.replace(tzinfo=None),
            "campaign": CAMPAIGN_ID,
            "segments": list(SEGMENTS),
        }
        for name, statement in phases.items():
            started = time.perf_counter()
            if name in ("indexes", "vacuum analyze"):
                for part in statement.split(";"):
                    conn.execute(part)  # type: ignore[arg-type]
            else:
                conn.execute(statement, params)  # type: ignore[arg-type]
            timings[name] = time.perf_counter() - started
            log(f"{name}: {timings[name]:.1f} s")
        counts = {
            t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
            for t in ("subscribers", "deliveries", "events")
        }
        log(f"rows: {counts}")
        timings.update({f"rows {t}": float(n) for t, n in counts.items()})
    return timings


def run_report(database_url: str, *, lag: timedelta | None = None, **period: object) -> tuple[float, float, int]:
    """(seconds to fold, seconds for the report, rows folded), as `cadence report` runs it."""
    from cadence.db.results import DEFAULT_LAG
    from cadence.db.session import transaction
    from cadence.files.catalog import CampaignCatalog
    from cadence.operations.results import campaign_results, catch_up

    campaign = CampaignCatalog(ROOT / "campaigns", ROOT / "templates").get(CAMPAIGN_ID)
    started = time.perf_counter()
    folded = catch_up(partial(transaction, database_url), lag=DEFAULT_LAG if lag is None else lag)
    fold_s = time.perf_counter() - started
    started = time.perf_counter()
    with transaction(database_url) as session:
        report = campaign_results(session, CAMPAIGN_ID, campaign, BENCH_NOW, **period)  # type: ignore[arg-type]
    query_s = time.perf_counter() - started
    assert report.total.sent > 0
    return fold_s, query_s, folded


def slowest_statements(database_url: str) -> list[tuple[float, str]]:
    """One steady report with every SQL statement timed: where the time goes."""
    from sqlalchemy import event

    from cadence.db.session import engine_for

    engine = engine_for(database_url)
    timings: list[tuple[float, str]] = []

    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        conn.info["started"] = time.perf_counter()  # type: ignore[attr-defined]

    def after(conn: object, cursor: object, statement: str, *args: object) -> None:
        elapsed = time.perf_counter() - conn.info["started"]  # type: ignore[attr-defined]
        timings.append((elapsed, " ".join(statement.split())[:110]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        run_report(database_url)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return sorted(timings, reverse=True)[:5]


def add_events(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO events (subscriber_id, delivery_id, kind, data, created_at)
               SELECT subscriber_id, id, 'click', json_build_object('link_id', (SELECT min(id) FROM links)),
                      sent_at + interval '40 days'
               FROM deliveries WHERE state = 'sent' AND id %% 97 = 5 LIMIT %(n)s""",
            {"n": n},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from datetime import date

    from cadence.db.migrate import upgrade

    info = machine_info()
    with postgres_database() as url:
        database_url = sqlalchemy_url(url)
        upgrade(database_url)
        load = fill(url, args.subscribers)
        first = run_report(database_url, lag=timedelta(0))  # a fresh load: nothing is in flight
        log(f"first report (folds every row): fold {first[0]:.2f} s, query {first[1]:.3f} s, {first[2]:,} rows")
        warm = [run_report(database_url) for _ in range(5)]
        steady = [f + q for f, q, _ in warm]
        log(f"report, nothing new: median {statistics.median(steady):.3f} s (runs: {[round(s, 3) for s in steady]})")
        slowest = slowest_statements(database_url)
        for elapsed, statement in slowest:
            log(f"  {elapsed * 1000:7.1f} ms  {statement}")
        add_events(url, 10_000)
        live = [run_report(database_url) for _ in range(3)]
        live_s = statistics.median([f + q for f, q, _ in live])
        log(f"report with 10,000 events not folded yet (counted live): median {live_s:.3f} s")
        delta = run_report(database_url, lag=timedelta(0))
        log(f"folding those 10,000 events, then the report: fold {delta[0]:.3f} s, query {delta[1]:.3f} s")
        week = [run_report(database_url, since=date(2026, 12, 9), until=date(2026, 12, 15)) for _ in range(3)]
        week_s = statistics.median([f + q for f, q, _ in week])
        log(f"report for one week: median {week_s:.3f} s")
        daily = [run_report(database_url, daily=True) for _ in range(3)]
        daily_s = statistics.median([f + q for f, q, _ in daily])
        log(f"report with the per-day series (--daily, --json): median {daily_s:.3f} s")
        env = cadence_env(Path(tempfile.mkdtemp(prefix="cadence-report-")), CADENCE_DATABASE_URL=database_url)
        started = time.perf_counter()
        ran = subprocess.run(
            [str(Path(sys.executable).with_name("cadence")), "report", CAMPAIGN_ID, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        cli_s = time.perf_counter() - started
        if ran.returncode != 0:
            raise SystemExit(ran.stderr)
        log(f"cadence report --json (subprocess): {cli_s:.2f} s")
    rows = [
        [
            "load: subscribers / deliveries / events (INSERT ... SELECT)",
            f"{load['subscribers']:.0f} s / {load['deliveries']:.0f} s / {load['events']:.0f} s",
        ],
        ["load: indexes, VACUUM ANALYZE", f"{load['indexes']:.0f} s, {load['vacuum analyze']:.0f} s"],
        [f"first report: fold {first[2]:,} rows into the rollups (once, after the upgrade)", f"{first[0]:.1f} s"],
        ["**report, nothing new (fold check + query, median of 5)**", f"**{statistics.median(steady):.3f} s**"],
        ["report with 10,000 new events counted live (median of 3)", f"{live_s:.3f} s"],
        ["fold those 10,000 events, then the report", f"{delta[0]:.3f} s + {delta[1]:.3f} s"],
        ["report for one week, --since/--until (median of 3)", f"{week_s:.3f} s"],
        ["report with the per-day series, --daily / --json (median of 3)", f"{daily_s:.3f} s"],
        ["`cadence report lower-back-pain --json`, whole process", f"{cli_s:.2f} s"],
    ]
    body = "\n\n".join(
        [
            "## Campaign results report (`bench/report_scale.py`)",
            f"{int(load['rows subscribers']):,} subscribers, {int(load['rows deliveries']):,} deliveries "
            f"(6 steps × 6 segments), {int(load['rows events']):,} events, PostgreSQL.",
            table(["what", "time"], rows),
            "A report is rollup + live (`src/cadence/db/results.py`): deliveries in a final state and "
            "events are folded into per-day rollups; rows newer than the fold bound (10 minutes, so no "
            "transaction still in flight can hold a smaller id) and deliveries still queued are counted "
            "live. Without the rollups the same report took 4.5 s (the live GROUP BY over 6,000,000 "
            "deliveries and the events join, first version of this script on the same machine).",
            "The slowest statements of one report with nothing new:",
            table(["ms", "statement"], [[f"{e * 1000:.1f}", f"`{st}`"] for e, st in slowest]),
            machine_markdown(info),
        ]
    )
    print(body)
    if not args.no_doc:
        write_section("report_scale", body)


if __name__ == "__main__":
    main()
