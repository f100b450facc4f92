"""Two checkouts' ``bench/send_throughput.py``, alternating rounds in one run (issue 12: "no loss
beyond noise, side by side with the code before the change").

    python bench/side_by_side.py BASE_CHECKOUT HEAD_CHECKOUT [--rounds 3] [-- send_throughput args]

Each checkout runs with its own ``.venv`` (``make install`` in it first). The machine may be
shared, so absolute rates mean little: rounds alternate (base, head, base, head, ...) so both
see the same load, and the report gives each round's 1-minute load average and the head/base
ratio of the medians, for the worker run (Cadence emails/s) and the single-process profile.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CADENCE = re.compile(r"Cadence: (\d+) emails in ([\d.]+)s = (\d+)/s")
_PROFILE = re.compile(r"profile \(commit every (\d+)\): (\d+) emails, (\d+)/s in one process")


def one_round(checkout: Path, extra: list[str]) -> dict[str, float]:
    python = checkout / ".venv" / "bin" / "python"
    load = os.getloadavg()[0]
    done = subprocess.run(
        [str(python), str(checkout / "bench" / "send_throughput.py"), "--no-doc", *extra],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    output = done.stdout + done.stderr
    cadence = _CADENCE.search(output)
    profiles = [int(m.group(3)) for m in _PROFILE.finditer(output)]
    if done.returncode != 0 or cadence is None:
        raise SystemExit(f"{checkout}: the benchmark failed ({done.returncode}):\n{output[-3000:]}")
    return {
        "rate": float(cadence.group(3)),
        "profile": float(max(profiles)) if profiles else 0.0,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path)
    parser.add_argument("head", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args, rest = parser.parse_known_args()  # the rest goes to send_throughput.py
    extra = [a for a in rest if a != "--"]
    results: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    started = time.monotonic()
    for r in range(args.rounds):
        order = ("base", "head") if r % 2 == 0 else ("head", "base")  # neither always goes first
        for name in order:
            result = one_round(getattr(args, name), extra)
            results[name].append(result)
            print(
                f"round {r + 1} {name}: {result['rate']:.0f} emails/s (workers), {result['profile']:.0f}/s"
                f" (one process); load {result['load_before']:.1f} -> {result['load_after']:.1f}",
                flush=True,
            )
    for key, label in (("rate", "workers"), ("profile", "one process")):
        base = statistics.median(r[key] for r in results["base"])
        head = statistics.median(r[key] for r in results["head"])
        print(f"median {label}: base {base:.0f}/s, head {head:.0f}/s, head/base = {head / base:.3f}")
    print(f"{args.rounds} rounds in {time.monotonic() - started:.0f} s; load average now {os.getloadavg()}")


if __name__ == "__main__":
    sys.exit(main())
