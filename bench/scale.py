"""A million subscribers end to end on PostgreSQL (issue 15): import, enroll, tick, send.

    nice -n 19 python bench/scale.py [--subscribers 1000000] [--workers 2] [--concurrency 2] [--no-doc]

Every phase is the real command a marketer or an operator runs, as its own process, on a fresh
PostgreSQL database ``cadence_bench_<random>`` (dropped afterwards), a Redis db claimed like the
test suite claims one, and postfix's ``smtp-sink`` on loopback:

1. ``cadence subscribers import runners.csv``: a generated CSV of N rows (Mailchimp-like
   header; all in New York so one clock instant is inside everyone's send window);
2. ``cadence campaigns enroll lower-back-pain --all``;
3. ``cadence worker`` processes are started, then the tick runs again and again until it finds
   nothing left to claim: ``operations.drip.tick`` in this process, exactly what the scheduler's
   tick task and ``cadence tick`` run (a ``cadence tick`` process spends ~1-10 s starting up on
   this loaded box, which would hide the tick's own cost). Each claims at most
   ``claim_limit x max_rounds`` (100,000) enrollments into ledger rows and queues their send
   tasks in Redis; its wall time is recorded beside the size of the ledger it ran against: the
   tick cost as the table grows;
4. the workers send step 1 to the sink; the phase ends when no delivery is queued or sending,
   and the sink's own counter must equal N.

The clock is a file (``CADENCE_CLOCK=file:...``) at Monday 07:30 in New York, so the first step
is due at once and stays inside the send window however long the send takes.

Memory: every process of a phase (the CLI command, each worker; not the ticks, which run here) is sampled every 0.1 s
(``VmRSS``, ``smaps_rollup`` Pss; bench/vs_listmonk.py's sampler); a command's peak is also its
``ru_maxrss`` from ``wait4`` (the kernel's own peak), whichever is higher. Database size:
``pg_database_size`` after each phase, and the biggest tables and indexes at the end.

Writes the ``scale`` section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_NOW,
    Workers,
    cadence_env,
    log,
    machine_info,
    machine_markdown,
    postgres_database,
    redis_database,
    rss_wrapper,
    smtp_sink,
    sqlalchemy_url,
    table,
    use_env,
    write_section,
)
from send_throughput import any_pending, pending, states
from vs_listmonk import MemorySampler, _pgid, _pids

TERRAINS = ["trails", "roads", "track", "treadmill"]
FIRST = ["Ann", "Bob", "Carmen", "Dev", "Eli", "Farah", "Gus", "Hana", "Ivo", "José", "Kim", "Lea"]


def generate(path: Path, rows: int) -> None:
    """`rows` distinct runners in New York, answers spread over the course's segments."""
    rng = random.Random(15)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Email Address,First Name,Time Zone,Terrain,Training for race\n")
        for i in range(rows):
            out.write(
                f"runner{i}@example{i % 97}.com,{rng.choice(FIRST)},America/New_York,"
                f"{rng.choice(TERRAINS)},{'yes' if rng.random() < 0.3 else 'no'}\n"
            )


@dataclass
class Phase:
    name: str
    command: str
    seconds: float
    items: int
    unit: str
    peak_rss_mb: float  # the command's own process (0 for the send phase)
    db_mb: float  # pg_database_size after the phase
    load: float  # 1-minute load average when the phase started
    note: str = ""

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def cli(cadence: str, args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cadence ARGS`` under bench/_common's wait4 wrapper while sampling its memory every
    0.1 s. Returns (wall seconds, peak RSS MB, stdout); exits on a non-zero status."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        rss_wrapper([cadence, *args]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the sampler finds the command by it
    )

    def find() -> dict[int, str]:
        return {pid: args[0] for pid in _pids() if pid != proc.pid and _pgid(pid) == proc.pid}

    with MemorySampler(find) as memory:
        out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"cadence {' '.join(args)} exited {proc.returncode}:\n{out}\n{err}")
    kib = int(re.search(r"PEAK_RSS_KIB=(\d+)", out).group(1))  # type: ignore[union-attr]
    sampled = max((p.rss_kb for p in memory.peaks.values()), default=0)
    return wall, max(kib, sampled) / 1024, out


def database_mb(conn: Any) -> float:
    return float(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]) / 2**20


def biggest_relations(conn: Any, limit: int = 10) -> list[list[str]]:
    """Tables (heap + TOAST, without indexes) and indexes, biggest first."""
    rows = conn.execute(
        """
        SELECT c.relname, CASE c.relkind WHEN 'i' THEN 'index' ELSE 'table' END,
               pg_table_size(c.oid), c.reltuples::bigint,
               CASE c.relkind WHEN 'i' THEN (SELECT t.relname FROM pg_index x JOIN pg_class t
                                             ON t.oid = x.indrelid WHERE x.indexrelid = c.oid) END
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
        ORDER BY pg_table_size(c.oid) DESC LIMIT %s
        """,
        (limit,),
    ).fetchall()
    return [
        [f"`{name}`" + (f" (on `{parent}`)" if parent else ""), kind, f"{size / 2**20:,.1f}", f"{max(tuples, 0):,}"]
        for name, kind, size, tuples, parent in rows
    ]


@dataclass
class Tick:
    ledger_before: int
    pending_before: int
    seconds: float
    claimed: int
    enqueued: int


def wait_done(conn: Any, workers: Workers, start: float, timeout: float) -> float:
    """Seconds from `start` until no delivery is queued or sending. An EXISTS (stops at the first
    row) every 0.2 s; the count behind the progress line costs PostgreSQL a scan of the pending
    rows, so it runs every 15 s only (send_throughput.wait_sent counts twice a second)."""
    next_count, last = 0.0, -1
    while True:
        now = time.perf_counter()
        if not any_pending(conn):
            return now - start
        if now >= next_count:
            left = pending(conn)
            log(f"  {left:,} queued or sending, {now - start:.0f} s")
            if left == last:
                raise SystemExit(f"no progress in 15 s with {left} left:\n" + "\n".join(workers.errors()[-20:]))
            last, next_count = left, now + 15
        if now - start > timeout:
            raise SystemExit(f"timeout after {timeout:.0f} s")
        workers.check_alive()
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000, help="subscribers (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="cadence worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="sending threads per worker (default 2)")
    parser.add_argument("--redis-db", type=int, default=12)
    parser.add_argument("--no-doc", action="store_true", help="print, do not write docs/performance.md")
    args = parser.parse_args()
    n = args.subscribers
    cadence = str(Path(sys.executable).with_name("cadence"))
    started = time.perf_counter()
    info = machine_info()
    phases: list[Phase] = []
    ticks: list[Tick] = []

    with tempfile.TemporaryDirectory(prefix="cadence-scale-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "data").mkdir()
        with smtp_sink(tmp) as sink, postgres_database() as pg_url, redis_database(args.redis_db) as broker_url:
            import psycopg

            clock_file = tmp / "clock"
            clock_file.write_text(BENCH_NOW.isoformat())
            env = cadence_env(
                tmp / "data",
                CADENCE_DATABASE_URL=sqlalchemy_url(pg_url),
                CADENCE_BROKER_URL=broker_url,
                CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
                CADENCE_CLOCK=f"file:{clock_file}",
                COLUMNS="200",  # one line per message of the CLI (rich wraps at 80 otherwise)
            )
            conn = psycopg.connect(pg_url, autocommit=True)
            subprocess.run([cadence, "db", "upgrade"], env=env, check=True, capture_output=True)
            use_env(env)  # the ticks run in this process (below), with the workers' settings
            from cadence.config import load_settings
            from cadence.operations import drip
            from cadence.operations.runtime import Runtime
            from cadence.tasks import enqueue_send, make_celery

            settings = load_settings(env)
            runtime, app = Runtime.from_settings(settings), make_celery(settings)
            empty_mb = database_mb(conn)

            csv_path = tmp / "runners.csv"
            t = time.perf_counter()
            generate(csv_path, n)
            log(f"generated {n:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")

            load = os.getloadavg()[0]
            log("import")
            wall, rss, out = cli(cadence, ["subscribers", "import", str(csv_path)], env)
            summary = next((line for line in out.splitlines() if "created" in line), "").strip()
            phases.append(Phase("import", "cadence subscribers import runners.csv", wall, n, "rows", rss,
                                database_mb(conn), load, summary))  # fmt: skip
            log(f"import: {wall:.1f} s, {rss:.0f} MB: {summary}")

            load = os.getloadavg()[0]
            log("enroll")
            wall, rss, out = cli(cadence, ["campaigns", "enroll", "lower-back-pain", "--all"], env)
            summary = next((line for line in out.splitlines() if "enrolled" in line), "").strip()
            phases.append(Phase("enroll", "cadence campaigns enroll lower-back-pain --all", wall, n, "enrollments",
                                rss, database_mb(conn), load, summary))  # fmt: skip
            log(f"enroll: {wall:.1f} s, {rss:.0f} MB: {summary}")
            conn.execute("ANALYZE")

            workers = Workers(tmp / "logs")
            try:
                workers.start(env, args.workers, args.concurrency)
                workers.wait_ready()

                def find() -> dict[int, str]:
                    groups = workers.pgids
                    return {pid: f"worker {pid}" for pid in _pids() if _pgid(pid) in groups}

                load = os.getloadavg()[0]
                with MemorySampler(find) as memory:
                    log("tick + send")
                    send_start = time.perf_counter()
                    tick_total = 0.0
                    while True:
                        ledger = int(conn.execute("SELECT count(*) FROM deliveries").fetchone()[0])
                        waiting = pending(conn)
                        t0 = time.perf_counter()
                        result = drip.tick(runtime, enqueue=partial(enqueue_send, app))
                        wall = time.perf_counter() - t0
                        ticks.append(Tick(ledger, waiting, wall, result.claimed, result.enqueued))
                        tick_total += wall
                        log(f"tick at {ledger:,} ledger rows: {wall:.2f} s, {result.claimed:,} claimed")
                        if result.locked_out:
                            raise SystemExit("the tick lock is held by someone else")
                        if result.claimed == 0:
                            break
                    ticked_mb = database_mb(conn)  # every ledger row exists now; the send goes on
                    send_s = wait_done(conn, workers, send_start, timeout=max(900.0, n / 50))
                time.sleep(0.5)  # smtp-sink counts a message when its "." arrives
                got = sink.messages()
                final = states(conn)
                errors = workers.errors()
            finally:
                workers.stop()
            if final.get("sent", 0) != n or got != n:
                raise SystemExit(f"send: states {final}, the sink counted {got} of {n}")
            if errors:
                log("worker log errors:\n" + "\n".join(errors[-10:]))
            memory.drop_transient()
            phases.append(Phase("tick", "the scheduler's tick (repeated until nothing is due)", tick_total, n,
                                "deliveries", 0.0, ticked_mb, load, f"{len(ticks)} ticks"))  # fmt: skip
            worker_peaks = sorted(memory.peaks.values(), key=lambda p: p.name)
            phases.append(Phase("send", f"{args.workers} × cadence worker --concurrency {args.concurrency}",
                                send_s, n, "emails", 0.0, database_mb(conn), load,
                                f"the sink counted {got:,}"))  # fmt: skip
            log(f"send: {send_s:.1f} s, {n / send_s:,.0f}/s; workers {memory.detail()}")
            conn.execute("VACUUM ANALYZE")
            vacuumed_mb = database_mb(conn)
            relations = biggest_relations(conn)
            conn.close()

    wall_all = time.perf_counter() - started
    report(args, info, phases, ticks, worker_peaks, relations, empty_mb, vacuumed_mb, wall_all)


TICK_HEADERS = [
    "tick",
    "ledger rows before",
    "queued or sending before",
    "claimed",
    "wall s",
    "µs per claimed row",
]


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    phases: list[Phase],
    ticks: list[Tick],
    worker_peaks: list[Any],
    relations: list[list[str]],
    empty_mb: float,
    vacuumed_mb: float,
    wall_all: float,
) -> None:
    n = args.subscribers
    phase_rows = [
        [
            p.name,
            f"`{p.command}`",
            f"{p.seconds:,.1f}",
            f"{p.rate:,.0f} {p.unit}/s",
            f"{p.peak_rss_mb:,.0f}" if p.peak_rss_mb else "workers: below" if p.name == "send" else "-",
            f"{p.db_mb:,.0f}",
            f"{p.load:.1f}",
            p.note,
        ]
        for p in phases
    ]
    tick_rows = [
        [str(i + 1), f"{t.ledger_before:,}", f"{t.pending_before:,}", f"{t.claimed:,}", f"{t.seconds:.2f}",
         f"{t.seconds / t.claimed * 1e6:.0f}" if t.claimed else "-"]
        for i, t in enumerate(ticks)
    ]  # fmt: skip
    worker_text = ", ".join(f"{p.rss_kb / 1024:.0f} MB ({p.pss_kb / 1024:.0f} MB PSS)" for p in worker_peaks)
    send = next(p for p in phases if p.name == "send")
    body = f"""## A million subscribers end to end (`bench/scale.py`)

`python bench/scale.py --subscribers {n}` ({wall_all / 60:.0f} min wall), on PostgreSQL, every phase
the real command as its own process, one after the other on a fresh database: a generated CSV of
{n:,} runners (`Email Address,First Name,Time Zone,Terrain,Training for race`, all in New York)
imported by the staff importer, all enrolled in the lower-back-pain drip, then the scheduler's
tick (`operations.drip.tick`, what `cadence tick` and the scheduler run; in the benchmark's own
process, so that a command's start-up does not hide its cost) run again and again until nothing
was left to claim (a tick claims at most 100,000: rounds of 5,000, 20 rounds) while
{args.workers} `cadence worker --concurrency {args.concurrency}` processes sent step 1 (the real
email, ~21 KB as MIME) to postfix's `smtp-sink` on loopback, which counted every message.
Peak RSS: each process sampled every 0.1 s (and a command's `ru_maxrss`).

| phase | command | wall s | throughput | peak RSS MB | database MB after | load | |
|---|---|---|---|---|---|---|---|
{chr(10).join("| " + " | ".join(r) + " |" for r in phase_rows)}

The tick phase's time is the sum of its ticks' wall times; the send phase runs from the first
tick to the last `sent` row, so it contains the ticks:
**{n:,} emails in {send.seconds / 60:.1f} min, {send.rate:,.0f} emails/s** end to end. Workers' peak RSS:
{worker_text}. The empty (migrated) database: {empty_mb:.0f} MB; after the send and a `VACUUM
ANALYZE`: {vacuumed_mb:,.0f} MB.

### Tick cost as the ledger grows

Each row is one tick: how many ledger rows (`deliveries`) existed and how many were still
queued or sending when it started, what it claimed (ledger rows created and send tasks queued)
and its wall time, the enqueue of its tasks to Redis included; the workers were sending
meanwhile, on the same two CPUs.

{table(TICK_HEADERS, tick_rows)}

### Biggest tables and indexes (after the send, `pg_table_size`)

{table(["relation", "kind", "MB", "rows (estimate)"], relations)}

### Machine

{machine_markdown(info)}
"""
    print(body)
    if not args.no_doc:
        write_section("scale", body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
