"""Clocks: where `now` comes from. The core never reads the time; adapters ask a clock.

Kinds, chosen by ``CADENCE_CLOCK``:

- ``system`` (default): the real UTC time.
- ``sim:<start ISO>@<real epoch>x<speed>``: simulated time that started at `start` when the real
  clock read `real epoch`, running `speed` times faster. Every process given the same string
  agrees on the time, which is how `cadence demo` runs two weeks of a drip in seconds across a
  worker and a scheduler process.
- ``file:<path>``: the time written (ISO 8601) in a file; tests move it forward by rewriting
  the file, and every worker process sees the change at once.

This is the only module that reads the time (issue 12). An operation reads its clock once and
passes that `now` down (a batch: ``enrollment.deliver``; a tick: ``enrollment.tick``), so every
decision of one operation is made at the same instant. :func:`wall_now` is the other kind of
time: real time, for leases.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from cadence.errors import ConfigError

__all__ = [
    "Clock",
    "FileClock",
    "SimulatedClock",
    "SystemClock",
    "clock_from_string",
    "parse_instant",
    "wall_now",
]


def wall_now() -> datetime:
    """Real time, whatever ``CADENCE_CLOCK`` says: for leases, enqueue stamps and lease renewals.
    They are about processes (a worker that died, a task the broker lost), which live in real
    time, not about the drip schedule, which follows the business clock. Read nowhere else."""
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return wall_now()

    def __str__(self) -> str:
        return "system"


class SimulatedClock:
    def __init__(self, start: datetime, *, real_start: float | None = None, speed: float = 86400.0) -> None:
        self.start = start.astimezone(UTC)
        self.real_start = time.time() if real_start is None else real_start
        self.speed = speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.real_start) * self.speed)

    def __str__(self) -> str:
        return f"sim:{self.start.isoformat()}@{self.real_start!r}x{self.speed!r}"


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        """The instant in the file; ConfigError naming CADENCE_CLOCK and the path if the file is
        missing, unreadable or holds anything but an ISO 8601 date-time."""
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"CADENCE_CLOCK: clock file {self.path} does not exist (write an ISO 8601 time into it)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"CADENCE_CLOCK: cannot read clock file {self.path} ({exc})") from None
        return parse_instant(text, f"CADENCE_CLOCK: clock file {self.path}")

    def set(self, instant: datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(instant.astimezone(UTC).isoformat())
        tmp.replace(self.path)  # atomic: a reader never sees a half-written time

    def advance(self, delta: timedelta) -> datetime:
        instant = self.now() + delta
        self.set(instant)
        return instant

    def __str__(self) -> str:
        return f"file:{self.path}"


def parse_instant(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{what}: {text[:60]!r} is not an ISO 8601 date-time") from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def clock_from_string(spec: str) -> Clock:
    """Build a clock from a ``CADENCE_CLOCK`` value (see the module docstring)."""
    spec = spec.strip()
    if spec in ("", "system"):
        return SystemClock()
    if spec.startswith("file:"):
        if not spec[5:].strip():
            raise ConfigError("CADENCE_CLOCK: 'file:' needs the path of a file holding the time (file:/tmp/clock)")
        return FileClock(Path(spec[5:].strip()))
    if spec.startswith("sim:"):
        try:
            start_text, rest = spec[4:].rsplit("@", 1)
            real_text, speed_text = rest.split("x", 1)
            return SimulatedClock(
                parse_instant(start_text, "CADENCE_CLOCK"), real_start=float(real_text), speed=float(speed_text)
            )
        except ValueError:
            raise ConfigError(f"CADENCE_CLOCK: {spec!r} is not sim:<ISO start>@<epoch>x<speed>") from None
    raise ConfigError(f"CADENCE_CLOCK: unknown clock {spec!r} (use system, sim:... or file:...)")
