"""CPU seconds per email of the send path, in one process (issue 15): repeatable under load.

    python bench/cpu_per_email.py [--n 2000] [--batch 250] [--dkim none|rsa|ed25519|both] [--kind drip|newsletter]
                                  [--cprofile] [--breakdown] [--memory]

Wall-clock rates on a shared 2-core machine swing with other people's work; the CPU time a
process spends per email does much less. This runs ``enrollment.deliver`` on real PostgreSQL and a
real ``smtp-sink`` (as a worker would, warm: variants compiled, connections open) and prints:

- this process's user + system CPU per email (``time.process_time``): the worker's cost;
- the CPU per email of the PostgreSQL backends of the bench database and of smtp-sink
  (``/proc/<pid>/stat``), the other processes an email costs on this box;
- with ``--cprofile``, a cProfile of the same run on stderr (its overhead inflates the total).

Prints only; writes nothing to docs/performance.md (the side-by-side scripts do).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (
    BENCH_NOW,
    CpuSnapshot,
    cadence_env,
    copy_subscribers,
    cpu_snapshot,
    enroll_ids,
    log,
    postgres_database,
    smtp_sink,
    use_env,
)
from send_throughput import dkim_settings


def _used(before: CpuSnapshot, after: CpuSnapshot, pids: set[int]) -> float:
    """CPU seconds the processes `pids` used between two snapshots."""
    return sum(after.procs[p][2] - before.procs[p][2] for p in pids if p in after.procs and p in before.procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="emails measured (default 2000)")
    parser.add_argument("--batch", type=int, default=250, help="deliveries per enrollment.deliver call")
    parser.add_argument("--dkim", choices=("none", "rsa", "ed25519", "both"), default="none")
    parser.add_argument(
        "--kind",
        choices=("drip", "newsletter"),
        default="drip",
        help="send the drip's first step (default) or copies of the January newsletter",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured runs; each is printed, the lowest counts")
    parser.add_argument("--cprofile", action="store_true", help="a cProfile of one more run on stderr")
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU per email of each send-path function (send_throughput's buckets)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="also the Python memory one batch holds at its peak (tracemalloc)"
    )
    parser.add_argument("--dump", type=Path, help="write the MIME bytes of the last message sent to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cadence-cpu-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "data").mkdir()
        with smtp_sink(tmp) as sink, postgres_database() as pg_url:
            clock_file = tmp / "clock"
            clock_file.write_text(BENCH_NOW.isoformat())
            env = cadence_env(
                tmp / "data",
                CADENCE_DATABASE_URL=pg_url,
                CADENCE_BROKER_URL="memory://",
                CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
                CADENCE_BATCH_SIZE=str(args.batch),
                CADENCE_CLOCK=f"file:{clock_file}",
                **dkim_settings(args.dkim, tmp),
            )
            use_env(env)

            import psycopg

            from cadence.config import load_settings
            from cadence.db.migrate import upgrade
            from cadence.operations import enrollment
            from cadence.operations.runtime import Runtime

            settings = load_settings(env)
            upgrade(settings.database_url)
            runtime = Runtime.from_settings(settings)
            conn = psycopg.connect(pg_url, autocommit=True)
            runs = args.repeats + (1 if args.cprofile else 0) + (1 if args.breakdown else 0) + (1 if args.memory else 0)
            sets = [
                copy_subscribers(conn, i * (args.n + args.batch), args.n + args.batch, BENCH_NOW) for i in range(runs)
            ]
            conn.execute("ANALYZE")

            newsletter_batches: list[list[int]] = []
            if args.kind == "newsletter":
                # Everyone asked for the clinic news; one schedule queues a copy for each of them
                # (due now), one tick hands them out in batches, and each run takes its share.
                from cadence.operations import newsletters

                conn.execute(
                    "INSERT INTO subscriber_topics (subscriber_id, topic, joined_at, source)"
                    " SELECT id, 'clinic-news', now(), 'bench' FROM subscribers"
                )
                newsletters.schedule(settings, "clinic-news-2027-01", at="now", actor="bench", now=BENCH_NOW)
                newsletter_batches = enrollment.tick(runtime, claim_limit=1_000_000).batches

            def one_run(lo: int, hi: int) -> list[list[int]]:
                if args.kind == "newsletter":
                    share = [newsletter_batches.pop(0) for _ in range((hi - lo + 1) // args.batch)]
                    enrollment.deliver(runtime, share[0])  # warm-up: compile the locked version, connect
                    return share[1:]
                enroll_ids(conn, lo, hi, BENCH_NOW, BENCH_NOW)
                batches = enrollment.tick(runtime, claim_limit=100_000).batches
                enrollment.deliver(runtime, batches[0])  # warm-up: compile variants, connect
                return batches[1:]

            def backends() -> set[int]:
                rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
                return {int(pid) for (pid,) in rows} - {conn.info.backend_pid}

            if args.dump:
                original_send = runtime.transport.send_many

                def dumping(messages, on_refused=None):  # type: ignore[no-untyped-def]
                    args.dump.write_bytes(messages[-1][1])
                    return original_send(messages, on_refused)

                runtime.transport.send_many = dumping
            best = None
            for lo, hi in sets[: args.repeats]:
                batches = one_run(lo, hi)
                pids = backends()
                before = cpu_snapshot()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                sent = sum(enrollment.deliver(runtime, batch).sent for batch in batches)
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                after = cpu_snapshot()

                pg, sink_cpu = _used(before, after, pids | backends()), _used(before, after, {sink.pid})
                row = (cpu / sent * 1e6, pg / sent * 1e6, sink_cpu / sent * 1e6, sent / wall)
                log(
                    f"{sent} emails: worker {row[0]:.0f} µs/email CPU, postgres {row[1]:.0f}, smtp-sink {row[2]:.0f};"
                    f" {row[3]:.0f}/s wall in one process"
                )
                best = row if best is None or row[0] < best[0] else best
            assert best is not None
            print(f"{args.kind}, dkim={args.dkim}: worker CPU {best[0]:.0f} µs/email (lowest of {args.repeats})")

            if args.breakdown:
                # send_throughput's exclusive-time buckets, clocked by this process's CPU time.
                import types

                import _common
                import send_throughput

                shim = types.SimpleNamespace(perf_counter=time.process_time, strftime=time.strftime)
                _common.time = send_throughput.time = shim  # type: ignore[assignment]
                batches = one_run(*sets[args.repeats])
                extra = _common.Buckets()  # the parts of "load" and of the send loop, below prepare_and_send
                from cadence.db import campaign_states, send_batch
                from cadence.operations import batch_ledger
                from cadence.operations import delivery as sending
                from cadence.operations import newsletter_copies as newsletter_sending

                for owner, name in (
                    (send_batch, "load_due"),
                    (send_batch, "suppressed_addresses"),
                    (campaign_states, "stopped_among"),
                    (sending, "_send_prepared"),
                    (batch_ledger.BatchLedger, "record"),
                    (newsletter_sending, "load_and_prepare"),
                ):
                    extra.patch(owner, name)
                try:
                    profile = send_throughput.profile_deliver(runtime, batches)
                finally:
                    extra.unpatch()
                for name, seconds in sorted(extra.time.items(), key=lambda item: -item[1]):
                    print(f"{seconds / profile.emails * 1e6:7.1f} µs  (inclusive of wrapped children) {name}")
                for _, label, us, calls in profile.rows():
                    print(f"{us:7.1f} µs  {calls:5.2f}/email  {label}")
                print(f"{profile.total_s / profile.emails * 1e6:7.1f} µs  total (CPU, with the wrappers' own cost)")

            if args.memory:
                # What one batch holds at its peak, in Python objects (tracemalloc counts what
                # Python allocates; the process's RSS adds the allocator's slack on top).
                import tracemalloc

                batches = one_run(*sets[args.repeats + (1 if args.breakdown else 0)])[:1]
                tracemalloc.start()
                enrollment.deliver(runtime, batches[0])
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                print(f"one batch of {len(batches[0])}: {peak / 2**20:.1f} MB of Python objects at its peak")

            if args.cprofile:
                import cProfile
                import pstats

                batches = one_run(*sets[-1])
                profiler = cProfile.Profile(time.process_time)  # CPU, not waits
                profiler.enable()
                for batch in batches:
                    enrollment.deliver(runtime, batch)
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(40)
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(50)
            conn.close()
            runtime.close()


if __name__ == "__main__":
    main()
