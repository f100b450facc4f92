"""The tick's cost: 1,000,000 enrollments with 10,000 due vs 100,000 with 10,000 due (issue 2).

    python bench/tick_cost.py [--sizes 100000,1000000] [--due 10000] [--repeats 3]

For each size, a fresh PostgreSQL database ``cadence_bench_<random>`` (dropped afterwards) is
filled in SQL with ``generate_series`` (seconds, not minutes):

- `size` subscribers and one lower-back-pain enrollment each;
- `due` of them due now (``next_send_at`` up to an hour in the past), spread evenly through the
  table, not clustered at its end;
- of the rest, 70 % active with a later step due 1-14 days ahead (they stay in the partial index
  ``ix_enrollments_due``: its worst case) and 30 % completed (``next_send_at`` NULL);
- history: one ``sent`` delivery per enrollment that is not due, so the ledger is as big as
  the enrollment table and ``deliveries_to_enqueue`` runs against a realistic index.

Then, after ``VACUUM ANALYZE``:

1. ``EXPLAIN (ANALYZE, BUFFERS)`` of the exact claim statement ``queries.claim_due_enrollments``
   issues (captured from SQLAlchemy, run in a rolled-back transaction): it should read
   ``ix_enrollments_due`` and touch only the due rows; and the same statement with index scans
   disabled, to show what the partial index saves.
2. The claim alone (``claim_due_enrollments``, limit 5000, rolled back), median of 5.
3. ``engine.tick(runtime, now=...)`` for real (claims all due rows into ledger rows), median of
   `repeats`, the state reset and vacuumed between runs; with an exclusive-time breakdown.

Prints a table and writes the ``tick_cost`` section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_NOW,
    CAMPAIGN_ID,
    Buckets,
    cadence_env,
    cpu_snapshot,
    cpu_usage,
    instrument_tick,
    log,
    machine_info,
    machine_markdown,
    naive,
    note_source_change,
    postgres_database,
    table,
    tick_rows,
    use_env,
    write_section,
)

DEFAULT_CLAIM_LIMIT = 5000  # engine.tick's default claim_limit
# engine._create_deliveries inserts a round's rows as ONE multi-VALUES INSERT of 14 columns per
# row: 5000 rows = 70,000 bind parameters, above PostgreSQL's protocol limit of 65,535, so a tick
# with more than 4,681 due rows fails. The bench probes the default, then uses this.
SAFE_CLAIM_LIMIT = 4000


def load(conn: Any, size: int, due: int) -> dict[str, float]:
    """Fill the database in SQL; returns seconds per phase."""
    now = naive(BENCH_NOW)
    every = size // due
    timings = {}
    t = time.perf_counter()
    conn.execute(
        """
        INSERT INTO subscribers (email, email_key, first_name, attributes, timezone, status, source,
                                 created_at, updated_at, confirmed_at, soft_bounces, consent)
        SELECT 'runner' || g || '@example.com', 'runner' || g || '@example.com', 'Runner' || g,
               (ARRAY['{"terrain": "trails"}', '{"terrain": "roads", "training_for_race": "yes"}',
                      '{"terrain": "roads"}'])[1 + g %% 3]::json,
               'America/New_York', 'active', 'bench', %(now)s, %(now)s, %(now)s, 0, '{}'::json
        FROM generate_series(1, %(size)s) AS g
        """,
        {"now": now, "size": size},
    )
    timings["subscribers"] = time.perf_counter() - t
    t = time.perf_counter()
    # s.id is 1..size in a fresh table. Due: every `every`-th id. Otherwise 70 % active with a
    # later step due in 1-14 days, 30 % completed. (id * 7919) % 100 scatters the two kinds.
    conn.execute(
        """
        INSERT INTO enrollments (subscriber_id, campaign_id, state, next_step, next_send_at, enrolled_at,
                                 last_sent_at, ended_at, end_reason)
        SELECT s.id, %(campaign)s,
               CASE WHEN s.id %% %(every)s = 0 OR (s.id * 7919) %% 100 < 70 THEN 'active' ELSE 'completed' END,
               CASE WHEN s.id %% %(every)s = 0 THEN 0 WHEN (s.id * 7919) %% 100 < 70 THEN 1 + s.id %% 5 ELSE 6 END,
               CASE WHEN s.id %% %(every)s = 0 THEN %(now)s - make_interval(mins => ((s.id / %(every)s) %% 60)::int)
                    WHEN (s.id * 7919) %% 100 < 70
                    THEN %(now)s + make_interval(days => (1 + s.id %% 14)::int, mins => (s.id %% 600)::int)
                    ELSE NULL END,
               %(now)s - interval '3 days',
               CASE WHEN s.id %% %(every)s = 0 THEN NULL ELSE %(now)s - interval '1 day' END,
               CASE WHEN s.id %% %(every)s <> 0 AND (s.id * 7919) %% 100 >= 70 THEN %(now)s - interval '1 day' END,
               CASE WHEN s.id %% %(every)s <> 0 AND (s.id * 7919) %% 100 >= 70 THEN 'all steps sent' ELSE '' END
        FROM subscribers AS s
        """,
        {"campaign": CAMPAIGN_ID, "every": every, "now": now},
    )
    timings["enrollments"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute(
        """
        INSERT INTO deliveries (enrollment_id, subscriber_id, campaign_id, step_id, step_index, segment_id, state,
                                attempts, due_at, not_before, enqueued_at, message_id, content_hash, last_error,
                                created_at, sent_at)
        SELECT e.id, e.subscriber_id, e.campaign_id, 'why-it-hurts', 0, 'trail', 'sent', 1,
               %(now)s - interval '1 day', %(now)s - interval '1 day', %(now)s - interval '1 day',
               '<d' || e.id || '.0000000000000000@precisionbodywork.example>', '', '',
               %(now)s - interval '1 day', %(now)s - interval '1 day'
        FROM enrollments AS e WHERE e.subscriber_id %% %(every)s <> 0
        """,
        {"now": now, "every": every},
    )
    timings["deliveries"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("VACUUM ANALYZE")
    timings["vacuum"] = time.perf_counter() - t
    return timings


def reset(conn: Any, size: int, due: int) -> None:
    """Undo a tick: drop the new ledger rows and make the due enrollments due again."""
    every = size // due
    conn.execute("DELETE FROM deliveries WHERE state <> 'sent'")
    conn.execute(
        """
        UPDATE enrollments SET next_send_at = %(now)s - make_interval(mins => ((subscriber_id / %(every)s) %% 60)::int)
        WHERE subscriber_id %% %(every)s = 0
        """,
        {"now": naive(BENCH_NOW), "every": every},
    )
    conn.execute("VACUUM ANALYZE enrollments")
    conn.execute("VACUUM ANALYZE deliveries")


def counts(conn: Any) -> dict[str, int]:
    row = conn.execute(
        """
        SELECT count(*),
               count(*) FILTER (WHERE state = 'active' AND next_send_at IS NOT NULL),
               count(*) FILTER (WHERE state = 'active' AND next_send_at <= %s),
               (SELECT count(*) FROM deliveries),
               pg_relation_size('ix_enrollments_due'),
               pg_relation_size('enrollments')
        FROM enrollments
        """,
        (naive(BENCH_NOW),),
    ).fetchone()
    keys = ("enrollments", "in_partial_index", "due", "deliveries", "index_bytes", "table_bytes")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def captured_claim(database_url: str, limit: int) -> tuple[str, Any]:
    """The SQL text and parameters claim_due_enrollments sends (captured, then rolled back)."""
    from sqlalchemy import event

    from cadence.db import queries
    from cadence.db.session import engine_for, session_factory

    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if "FROM enrollments" in statement and "FOR UPDATE" in statement:
            seen.append((statement, params))

    engine = engine_for(database_url)
    event.listen(engine, "before_cursor_execute", grab)
    try:
        with session_factory(database_url)() as session:
            queries.claim_due_enrollments(session, BENCH_NOW, limit)
            session.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return seen[0]


def explain(conn: Any, statement: str, params: Any, *, no_index: bool = False) -> tuple[list[str], float]:
    """EXPLAIN (ANALYZE, BUFFERS) inside a rolled-back transaction; (plan lines, execution ms)."""
    with conn.transaction(force_rollback=True):
        if no_index:
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_indexonlyscan = off")
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params).fetchall()
    lines = [str(r[0]) for r in rows]
    ms = next(float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time"))
    return lines, ms


def median_explain(
    conn: Any, statement: str, params: Any, *, no_index: bool = False, runs: int = 5
) -> tuple[list[str], float]:
    """The plan of the median of `runs` EXPLAIN ANALYZE executions (the machine is shared)."""
    results = sorted((explain(conn, statement, params, no_index=no_index) for _ in range(runs)), key=lambda r: r[1])
    return results[len(results) // 2]


def time_claim(database_url: str, limit: int, runs: int = 5) -> float:
    """Median wall seconds of claim_due_enrollments(limit) incl. ORM loading, rolled back."""
    from cadence.db import queries
    from cadence.db.session import session_factory

    times = []
    for _ in range(runs):
        with session_factory(database_url)() as session:
            t = time.perf_counter()
            claimed = queries.claim_due_enrollments(session, BENCH_NOW, limit)
            times.append(time.perf_counter() - t)
            session.rollback()
        assert claimed, "nothing due"
    return statistics.median(times)


@dataclass
class TickRun:
    wall: float
    cpu_py: float  # this process (Python: SQLAlchemy, psycopg)
    cpu_pg: float  # the PostgreSQL backends serving it
    buckets: Buckets


def measure(size: int, due: int, repeats: int, tmp: Path) -> dict[str, Any]:
    import psycopg

    with postgres_database() as pg_url:
        env = cadence_env(tmp / "data", CADENCE_DATABASE_URL=pg_url, CADENCE_EMAIL_URL="outbox://")
        use_env(env)
        from cadence.config import load_settings
        from cadence.db.migrate import upgrade
        from cadence.db.session import engine_for
        from cadence.operations import enrollment as engine
        from cadence.operations.runtime import Runtime

        settings = load_settings(env)
        upgrade(settings.database_url)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            log(f"loading {size} enrollments ({due} due) ...")
            loaded = load(conn, size, due)
            log("loaded: " + ", ".join(f"{k} {v:.1f}s" for k, v in loaded.items()))
            before = counts(conn)
            assert before["due"] == due, before
            runtime = Runtime.from_settings(settings)
            # Does engine.tick work with its default claim_limit at this many due rows?
            default_error = ""
            try:
                engine.tick(runtime, now=BENCH_NOW)
                limit = DEFAULT_CLAIM_LIMIT
            except DBAPIError as exc:  # rolled back: nothing was claimed
                default_error = str(exc.orig or exc).splitlines()[0]
                limit = SAFE_CLAIM_LIMIT
                log(f"engine.tick() with claim_limit={DEFAULT_CLAIM_LIMIT} failed: {default_error}")
            reset(conn, size, due)

            statement, params = captured_claim(settings.database_url, limit)
            plan, plan_ms = median_explain(conn, statement, params)
            seq_plan, seq_ms = median_explain(conn, statement, params, no_index=True)
            claim_s = time_claim(settings.database_url, limit)
            log(f"claim: EXPLAIN ANALYZE {plan_ms:.1f} ms (without index {seq_ms:.1f} ms), wall {claim_s * 1e3:.0f} ms")

            runs = []
            me = os.getpid()
            for r in range(repeats):
                if r:
                    reset(conn, size, due)
                backends = {
                    int(pid)
                    for (pid,) in conn.execute(
                        "SELECT pid FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                }
                buckets = Buckets()
                instrument_tick(buckets, settings.database_url)
                cpu_before = cpu_snapshot()
                t = time.perf_counter()
                try:
                    result = engine.tick(runtime, now=BENCH_NOW, claim_limit=limit)
                finally:
                    elapsed = time.perf_counter() - t
                    buckets.unpatch()
                _, cpu = cpu_usage(
                    cpu_before,
                    cpu_snapshot(),
                    lambda pid, comm, pgid, pg=frozenset(backends): "py" if pid == me else "pg" if pid in pg else None,
                )
                assert result.claimed == due and result.enqueued == due, (result.claimed, result.enqueued)
                runs.append(TickRun(elapsed, cpu.get("py", 0.0), cpu.get("pg", 0.0), buckets))
                log(
                    f"tick {r + 1}: {elapsed:.2f}s for {due} due ({elapsed / due * 1e6:.0f} µs per due row);"
                    f" CPU: Python {runs[-1].cpu_py:.2f}s, postgres {runs[-1].cpu_pg:.2f}s"
                )
            after = counts(conn)
        engine_for(settings.database_url).dispose()
    runs.sort(key=lambda run: run.wall)
    median = runs[len(runs) // 2]
    return {
        "size": size,
        "due": due,
        "limit": limit,
        "default_error": default_error,
        "load": loaded,
        "counts": before,
        "after": after,
        "plan": plan,
        "plan_ms": plan_ms,
        "seq_plan": seq_plan,
        "seq_ms": seq_ms,
        "claim_s": claim_s,
        "ticks": [run.wall for run in runs],
        "tick_s": median.wall,
        "tick_cpu": statistics.median(run.cpu_py + run.cpu_pg for run in runs),
        "tick_buckets": median.buckets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="enrollment counts (default 100000,1000000)")
    parser.add_argument("--due", type=int, default=10000, help="due enrollments in each (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="ticks per size; the median counts (default 5)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/performance.md")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    info = machine_info()  # at the start: the commit this process imports
    with tempfile.TemporaryDirectory(prefix="cadence-bench-") as tmp:
        results = [measure(size, args.due, args.repeats, Path(tmp)) for size in sizes]
    note_source_change(info)
    report(args, results, info, time.perf_counter() - started)


def report(args: argparse.Namespace, results: list[dict[str, Any]], info: dict[str, str], wall: float) -> None:
    small, big = results[0], results[-1]
    rows = []
    for res in results:
        c = res["counts"]
        rows.append(
            [
                f"{res['size']:,}",
                f"{c['in_partial_index']:,}",
                f"{res['due']:,}",
                f"{c['deliveries']:,}",
                f"{c['index_bytes'] / 2**20:.1f} / {c['table_bytes'] / 2**20:.0f}",
                f"{res['plan_ms']:.1f}",
                f"{res['seq_ms']:.1f}",
                f"{res['claim_s'] * 1e3:.0f}",
                f"**{res['tick_s']:.2f}** ({', '.join(f'{s:.2f}' for s in res['ticks'])})",
                f"{res['tick_cpu']:.2f}",
                f"{res['tick_s'] / res['due'] * 1e6:.0f}",
            ]
        )
    summary = table(
        [
            "enrollments",
            "in ix_enrollments_due",
            "due",
            "ledger rows before",
            "index / table MiB",
            f"claim SQL, EXPLAIN ANALYZE ms (LIMIT {small['limit']})",
            "same without index scans, ms",
            "claim_due_enrollments wall ms (ORM incl.)",
            "engine.tick s, median (runs, sorted)",
            "tick CPU s, median (Python + postgres)",
            "tick µs per due row",
        ],
        rows,
    )
    scale = big["tick_s"] / small["tick_s"]
    claim_scale = big["plan_ms"] / small["plan_ms"]
    ratios = table(
        ["", f"{big['size']:,} vs {small['size']:,} enrollments ({big['size'] / small['size']:.0f}x the rows)"],
        [
            ["engine.tick wall time (median)", f"**{scale:.2f}x**"],
            ["engine.tick CPU time, Python + postgres (median)", f"**{big['tick_cpu'] / small['tick_cpu']:.2f}x**"],
            ["claim SQL execution time (EXPLAIN ANALYZE)", f"**{claim_scale:.2f}x**"],
            ["claim SQL without the index (seq scan)", f"{big['seq_ms'] / small['seq_ms']:.2f}x"],
        ],
    )
    errors = [r for r in results if r["default_error"]]
    if errors:
        limit_note = (
            f"**with its default `claim_limit={DEFAULT_CLAIM_LIMIT}` the tick FAILED** at "
            + ", ".join(f"{r['size']:,}" for r in errors)
            + f" enrollments: `{errors[0]['default_error']}`. `engine._create_deliveries` sends a round as"
            f" one multi-VALUES INSERT with 14 bind parameters per row ({DEFAULT_CLAIM_LIMIT} rows = "
            f"{14 * DEFAULT_CLAIM_LIMIT:,} > 65,535, PostgreSQL's limit), so any tick with more than 4,681 due"
            f" rows fails and is rolled back, every time. The numbers below use"
            f" `engine.tick(runtime, claim_limit={SAFE_CLAIM_LIMIT})`: {-(-args.due // SAFE_CLAIM_LIMIT)} rounds"
            " plus a final empty one."
        )
    else:
        limit_note = (
            f"the default {DEFAULT_CLAIM_LIMIT}, {-(-args.due // DEFAULT_CLAIM_LIMIT)} rounds plus a final empty one."
        )
    breakdowns = "\n\n".join(
        f"**{res['size']:,} enrollments, {res['due']:,} due** (median run, {res['tick_s']:.2f} s):\n\n"
        + table(
            ["engine.tick part (exclusive)", "ms", "µs per due row", "share"],
            tick_rows(res["tick_buckets"], res["tick_s"], res["due"]),
        )
        for res in (small, big)
    )
    plan = "\n".join(big["plan"])
    seq_plan = "\n".join(big["seq_plan"])
    sizes = ",".join(str(r["size"]) for r in results)
    body = f"""## Tick cost: {big["size"]:,} vs {small["size"]:,} enrollments, {big["due"]:,} due

`python bench/tick_cost.py --sizes {sizes} --due {args.due} --repeats {args.repeats}`
({wall:.0f} s wall including loading).

Data (SQL `generate_series`): one lower-back-pain enrollment per subscriber; {args.due:,} due now
(spread through the table); of the others 70 % active with a later step due in 1-14 days (they
stay in the partial index) and 30 % completed; one `sent` ledger row per enrollment that is not
due. `engine.tick` claims in rounds of `claim_limit` rows: {limit_note}

{ratios}

{summary}

The claim reads `ix_enrollments_due` (partial: `state = 'active' AND next_send_at IS NOT NULL`)
in `next_send_at` order and stops after the limit, so its cost follows the due rows: EXPLAIN
ANALYZE at {big["size"]:,} enrollments:

```
{plan}
```

Forced off the index (`enable_indexscan/bitmapscan/indexonlyscan = off`), the same statement
scans the table ({big["seq_ms"]:.0f} ms instead of {big["plan_ms"]:.0f} ms):

```
{seq_plan}
```

### Where a tick's time goes

{breakdowns}

### Machine

{machine_markdown(info)}

### Reproduce

```
.venv/bin/python bench/tick_cost.py                       # 100,000 and 1,000,000 enrollments, 10,000 due
.venv/bin/python bench/tick_cost.py --sizes 100000,1000000,3000000 --due 10000 --repeats 5
```
"""
    print(body)
    if not args.no_doc:
        write_section("tick_cost", body)


if __name__ == "__main__":
    main()
