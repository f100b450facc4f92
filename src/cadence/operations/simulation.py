"""Drive a ``file:`` clock through days of a drip while real workers and a real scheduler run.

Time moves in fixed steps and stands still while work is due at the current simulated minute,
so sends happen at the same simulated time however slow the machine is. `cadence demo` and the
end-to-end tests use this; production uses the system clock and needs none of it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cadence.clock import FileClock
from cadence.config import Settings
from cadence.db import progress
from cadence.db.session import transaction
from cadence.errors import CadenceError


@dataclass
class Progress:
    now: datetime
    active: int
    sent: int


class ClockDriver:
    def __init__(self, settings: Settings, clock: FileClock, subscriber_ids: Sequence[int]) -> None:
        self.settings = settings
        self.clock = clock
        self.ids = list(subscriber_ids)

    def pending(self, now: datetime) -> int:
        """Enrollments due and deliveries due or in flight at `now` (work the system owes)."""
        with transaction(self.settings.database_url) as session:
            return progress.work_owed(session, self.ids, now)

    def progress(self) -> Progress:
        with transaction(self.settings.database_url) as session:
            active, sent = progress.active_and_sent(session, self.ids)
        return Progress(self.clock.now(), active, sent)

    def run(
        self,
        *,
        step: timedelta = timedelta(minutes=30),
        real_step: float = 0.0,
        timeout: float = 240.0,
        processes: Sequence[subprocess.Popen[bytes]] = (),
        on_progress: Callable[[Progress], None] | None = None,
        on_step: Callable[[datetime], None] | None = None,
    ) -> Progress:
        """Advance the clock until no enrollment of these subscribers is active."""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise CadenceError(f"the simulation did not finish within {timeout:.0f} s")
            for proc in processes:
                if proc.poll() is not None:
                    raise CadenceError(f"process {proc.args!r} exited early with status {proc.returncode}")
            now = self.clock.now()
            if self.pending(now):
                time.sleep(0.02)  # the tick and the workers are busy with this simulated minute
                if on_progress:
                    on_progress(self.progress())
                continue
            state = self.progress()
            if on_progress:
                on_progress(state)
            if state.active == 0:
                return state
            if real_step:
                time.sleep(real_step)
            self.clock.advance(step)
            if on_step:
                on_step(self.clock.now())
