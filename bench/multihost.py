"""More than one machine (issue 15): `cadence worker` on separate hosts (Linux network
namespaces with their own addresses, joined to this box's PostgreSQL and Redis over virtual
ethernet and a bridge), kill -9 one host's worker mid-send, and the others finish.

    sudo .venv/bin/python bench/multihost.py [--n 3000] [--hosts 3] [--concurrency 2] [--no-doc]

Needs root, iproute2 (`ip netns`) and socat. Sets everything up and tears it down, on failure or
Ctrl-C too (tests/support/multihost.py: bridge, namespaces, veth pairs, socat forwarders to
127.0.0.1:5432 and :6379, an aiosmtpd recorder on the bridge address); a fresh PostgreSQL
database and a claimed Redis db, both dropped afterwards. tests/test_multihost.py runs a small
version of the same scenario. Writes the ``multihost`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    log,
    machine_info,
    machine_markdown,
    postgres_database,
    redis_database,
    sqlalchemy_url,
    table,
    write_section,
)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through every teardown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="emails (default 3000)")
    parser.add_argument("--hosts", type=int, default=3, help="hosts, each a namespace with one worker (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="sending threads per worker (default 2)")
    parser.add_argument("--kill-after", type=float, default=0.3, help="kill host 1 at this share received")
    parser.add_argument("--lease", type=int, default=5, help="CADENCE_LEASE_SECONDS (default 5)")
    parser.add_argument("--batch", type=int, default=50, help="CADENCE_BATCH_SIZE (default 50)")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--no-doc", action="store_true", help="print, do not write docs/performance.md")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)

    from tests.support.multihost import missing_tools, run_multihost

    missing = missing_tools()
    if missing:
        raise SystemExit("needs " + ", ".join(missing))
    info = machine_info()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="cadence-multihost-") as tmp,
        postgres_database() as pg_url,
        redis_database(args.redis_db) as redis_url,
    ):
        run = run_multihost(
            Path(tmp), sqlalchemy_url(pg_url), redis_url, n=args.n, hosts=args.hosts, concurrency=args.concurrency,
            kill_after=args.kill_after, lease_seconds=args.lease, batch_size=args.batch, timeout=600,
        )  # fmt: skip
    wall = time.perf_counter() - started

    lost = args.n - run.recipients
    extra = sum(len(ids) - 1 for ids in run.duplicates.values())
    ok = lost == 0 and run.sent_rows == args.n and len(run.duplicates) <= run.window and run.same_message_id
    log(
        f"{'OK' if ok else 'FAILED'}: {run.recipients}/{args.n} recipients, {len(run.duplicates)} duplicated "
        f"(window {run.window}), per host {dict(sorted(run.per_host.items()))}, leftovers {run.leftovers}"
    )
    host_rows = [
        [host, f"{count:,}", "killed (SIGKILL) mid-send" if host == "h1" else "finished the send"]
        for host, count in sorted(run.per_host.items())
    ]
    result_rows = [
        ["ledger rows `sent`", f"{run.sent_rows:,} of {args.n:,} (other states: {run.other_rows or 'none'})"],
        ["recipients who got the email", f"{run.recipients:,} of {args.n:,}: **{lost} lost**"],
        [
            "recipients who got it twice",
            f"**{len(run.duplicates)}** ({extra} extra messages); same Message-ID as the first copy: "
            + ("yes" if run.same_message_id else "**no**"),
        ],
        [
            "the documented window",
            f"one group per sending thread of the dead worker: {args.concurrency} × {run.commit_every} = {run.window}",
        ],
        ["send, first message to last", f"{run.seconds:.1f} s ({args.n / run.seconds:,.0f} emails/s)"],
        [
            "from the kill to the last message",
            f"{run.after_kill_seconds:.1f} s (the dead worker's leased rows come back after their lease, "
            f"{args.lease} s, at the next tick)",
        ],
        ["namespaces, links, forwarders left after the run", ", ".join(run.leftovers) or "none"],
        ["timeline (s from the start)", ", ".join(f"{label} {t:.1f}" for label, t in run.timeline.items())],
    ]
    body = f"""## More than one machine: kill -9 a host mid-send (`bench/multihost.py`)

`sudo python bench/multihost.py --n {args.n} --hosts {args.hosts} --concurrency {args.concurrency}`
({wall:.0f} s wall; load average {load:.1f} at the start on this shared 2-CPU box, run at niceness
{os.nice(0)}: the rate below is this box's under that load, the SMTP server an aiosmtpd recorder
in Python; the point here is what arrives, not how fast).

{args.hosts} hosts, each a Linux network namespace with its own address on a bridge
(`10.231.X.11`...), with nothing but its own loopback and a veth pair: the box's PostgreSQL and
Redis (listening on 127.0.0.1 only) are reached at the bridge address through a `socat`
forwarder each, and the SMTP server (an aiosmtpd recorder that keeps every message and the
address it came from) listens on the bridge address. Each host runs `cadence worker
--concurrency {args.concurrency}`; host {args.hosts} also runs `cadence scheduler` (ticks every 0.5 s).
`CADENCE_LEASE_SECONDS={args.lease}`, `CADENCE_BATCH_SIZE={args.batch}`, `CADENCE_COMMIT_EVERY={run.commit_every}`.
{args.n:,} runners get step 1 of the lower-back-pain course. Once the recorder had
{args.kill_after:.0%} of them (and some from h1), h1's worker was killed with SIGKILL: at that moment
{run.killed_at:,} messages had arrived, {run.killed_host_sent:,} of them from h1.

{table(["host", "messages received from it", ""], host_rows)}

{table(["result", ""], result_rows)}

### Machine

{machine_markdown(info)}
"""
    print(body)
    if not args.no_doc:
        write_section("multihost", body)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
