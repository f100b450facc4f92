"""People per campaign and enrollment state, without counting the enrollments (issue 14: the
dashboard and the campaign list at 1,000,000 enrollments; counting them took 0.2-0.4 s even
from an index alone, bench/console_pages.py).

On PostgreSQL the database keeps the counts itself (migration 0011): a statement-level trigger
on ``enrollments`` appends each statement's net change to ``enrollment_tallies`` as a few rows
of (campaign, state, waiting, ±n); a count is the sum of those rows. Why it stays exact with
workers, ticks and staff changing enrollments at once:

- every change goes through the trigger, whatever code (or ``ON DELETE CASCADE`` from an erased
  subscriber) made it, in the same transaction as the change: it commits or rolls back with it;
- writers only *append* rows, so two sends never wait on one counter row (a single row per
  campaign would make every batch of a campaign queue behind the others until commit);
- :func:`compact` folds the rows into one per (campaign, state, waiting) with one statement
  (``DELETE ... RETURNING`` feeding an ``INSERT``): it deletes only rows its snapshot sees and
  re-inserts their sum, so rows appended meanwhile stay, and a second compaction running at the
  same time skips the rows the first deleted (they are gone when its lock wait ends).

On SQLite (one writer, small lists) the table stays empty and the counts are read live.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cadence.db.models import Enrollment, EnrollmentTally

# Compact once the table holds more rows than this: a few thousand rows sum in milliseconds, and
# compacting a table that is already compact would only rewrite it.
COMPACT_AFTER = 2000

Counts = dict[str, dict[tuple[str, bool], int]]  # campaign -> (state, waiting) -> people


def _kept(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def counts(session: Session) -> Counts:
    """``{campaign: {(state, waiting): n}}`` for every campaign with enrollments; ``waiting``:
    the next email is scheduled (``next_send_at`` set)."""
    found: Counts = defaultdict(dict)
    if _kept(session):
        group = (EnrollmentTally.campaign_id, EnrollmentTally.state, EnrollmentTally.waiting)
        query = select(*group, func.sum(EnrollmentTally.n)).group_by(*group)
    else:
        waiting = Enrollment.next_send_at.is_not(None)
        query = select(Enrollment.campaign_id, Enrollment.state, waiting, func.count()).group_by(
            Enrollment.campaign_id, Enrollment.state, waiting
        )
    for campaign_id, state, is_waiting, n in session.execute(query):
        if n:
            found[str(campaign_id)][(str(state), bool(is_waiting))] = int(n)
    return dict(found)


def earliest_waiting(session: Session, campaign_id: str) -> datetime | None:
    """The earliest scheduled next send of the campaign's active enrollments: the first entry
    of ``ix_enrollments_campaign_state`` for (campaign, active) with a time, not a scan."""
    return session.scalar(
        select(func.min(Enrollment.next_send_at)).where(
            Enrollment.campaign_id == campaign_id, Enrollment.state == "active", Enrollment.next_send_at.is_not(None)
        )
    )


def compact(session: Session) -> int:
    """Fold the tally rows into one per (campaign, state, waiting) when there are many; returns
    the rows there were (0 when nothing was done). See the module docstring for why it is exact."""
    if not _kept(session):
        return 0
    rows = int(session.scalar(select(func.count()).select_from(EnrollmentTally)) or 0)
    if rows <= COMPACT_AFTER:
        return 0
    session.execute(
        text(
            """WITH gone AS (DELETE FROM enrollment_tallies RETURNING campaign_id, state, waiting, n)
               INSERT INTO enrollment_tallies (campaign_id, state, waiting, n)
               SELECT campaign_id, state, waiting, sum(n) FROM gone
               GROUP BY campaign_id, state, waiting HAVING sum(n) <> 0"""
        )
    )
    return rows
