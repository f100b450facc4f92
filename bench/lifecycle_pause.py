"""Pause, resume and cancel in the middle of a 10,000-email send, with real workers (issue 13).

    python bench/lifecycle_pause.py [--n 10000] [--begin-after 1000]

The scenario of tests/test_lifecycle_worker.py (tests/support/midsend.py) at full size: a
PostgreSQL database of its own, a claimed Redis db number, two ``cadence worker`` processes
(concurrency 2) and a ``cadence scheduler``, an aiosmtpd sink on loopback. Prints how many
emails arrived after the pause and the cancel and how long after, how long the resume took to
send the rest, and whether every recipient got exactly one email. Exit status 1 if a claim
does not hold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: services, the scenario

from tests.support.midsend import run_mid_send  # noqa: E402
from tests.support.services import claimed_redis_db, postgres_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--begin-after", type=int, default=1_000, help="emails received before the pause/cancel")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_database() as database_url,
        claimed_redis_db(range(14, 16), owner="bench-lifecycle") as redis_url,
    ):
        # A sink without any delay: at 10,000 emails the pause lands mid-send anyway.
        run = run_mid_send(Path(tmp), database_url, redis_url, args.n, begin_after=args.begin_after, accept_delay=0)
    once = len(run.per_recipient) == args.n and set(run.per_recipient.values()) == {1}
    print(f"emails: {args.n} per campaign; send rate before the pause {run.send_rate:.0f}/s")
    print(
        f"pause:  {run.pause_at} received at the pause, {run.after_pause} after it, "
        f"the last {run.pause_stop_seconds:.2f} s after; quiet afterwards: {run.still_after_pause}"
    )
    print(f"resume: the rest sent in {run.resume_seconds:.1f} s; every recipient exactly once: {once}")
    print(
        f"cancel: {run.cancel_at} received at the cancel, {run.after_cancel} after it, the last "
        f"{run.cancel_stop_seconds:.2f} s after; sent {run.cancelled_sent}, skipped {run.cancelled_skipped}, "
        f"other states {run.cancelled_other or 'none'}"
    )
    ok = (
        once
        and run.still_after_pause
        and run.still_after_cancel
        and run.pause_stop_seconds <= 1.5
        and run.cancel_stop_seconds <= 1.5
        and run.cancelled_sent + run.cancelled_skipped == args.n
        and not run.cancelled_other
    )
    if not ok:
        print(run.logs[-4000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
