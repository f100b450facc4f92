"""Pause, resume, cancel and archive a campaign (issue 13): staff decisions, written to
``campaign_states`` with an audit entry in the same transaction.

What each one means (the CLI's --help and the README say the same):

- **pause**: no new sends within about a second, including batches already running on workers
  (each re-checks every ~0.5 s and gives its unsent rows back to the queue untouched); the
  tick claims nothing of it; enrollments keep their place.
- **resume**: sending continues with nothing repeated and nothing skipped. What fell due during
  the pause goes out under the usual rules: the send window (a step more than an hour late
  waits for the next window, ``core/drip_policy.postpone_until``) and the transport's rate
  limit (every send takes a token, so a backlog never bursts).
- **cancel** (irreversible): queued emails are never sent (marked skipped, "campaign
  cancelled"), enrollments end; a cancelled campaign cannot be resumed.
- **archive**: only a cancelled or finished campaign (no active enrollment, nothing waiting);
  hidden from ``campaigns list`` unless ``--all``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session

from cadence.clock import wall_now
from cadence.config import Settings
from cadence.db import campaign_states as states
from cadence.db import newsletters as newsletter_rows
from cadence.db.audit import record_audit
from cadence.db.session import transaction
from cadence.errors import InputError, NotFound
from cadence.files.campaigns import list_campaigns

__all__ = [
    "ACTIONS",
    "LifecycleResult",
    "archive",
    "cancel",
    "change_state",
    "check_open_for_enrollment",
    "known_campaigns",
    "newsletter_names",
    "pause",
    "resolve_campaign",
    "resume",
]


@dataclass(frozen=True)
class LifecycleResult:
    campaign: str
    action: str
    previous: str
    state: str
    changed: bool
    skipped: int = 0  # cancel: queued emails marked skipped
    ended: int = 0  # cancel: enrollments ended
    message: str = ""

    def document(self) -> dict[str, object]:
        return asdict(self)


def resolve_campaign(name: str, known: Iterable[str], newsletters: Iterable[str] = ()) -> str:
    """`name` if it is a known campaign id; NotFound with the closest names and the list. A
    newsletter's name gets the newsletters command to use (its state is mirrored into the
    campaign states, so without this `campaigns pause NEWSLETTER` changed the mirror only)."""
    if name in set(newsletters):
        raise NotFound(f"{name!r} is a newsletter, not a drip campaign: use `cadence newsletters status {name}`")
    ids = sorted(set(known) - set(newsletters))
    if name in ids:
        return name
    close = difflib.get_close_matches(name, ids, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listing = f" (campaigns: {', '.join(ids)})" if ids else " (there are no campaigns)"
    raise NotFound(f"no campaign {name!r}{hint}{listing}")


def pause(session: Session, campaign_id: str, *, actor: str, now: datetime) -> LifecycleResult:
    previous = states.state_of(session, campaign_id)
    if previous in (states.CANCELLED, states.ARCHIVED):
        raise InputError(f"{campaign_id} is {previous}: only a running campaign can be paused")
    if previous == states.PAUSED:
        return LifecycleResult(
            campaign_id, "pause", previous, previous, False, message=f"{campaign_id} was already paused"
        )
    states.set_state(session, campaign_id, states.PAUSED, now=now, by=actor)
    _audit(session, actor, "pause", campaign_id, now, previous=previous)
    return LifecycleResult(
        campaign_id,
        "pause",
        previous,
        states.PAUSED,
        True,
        # One sentence for every door: the console showed "`cadence campaigns resume` goes on".
        message=f"{campaign_id} is paused: no new emails within a second; everyone keeps their place until it resumes",
    )


def resume(session: Session, campaign_id: str, *, actor: str, now: datetime) -> LifecycleResult:
    previous = states.state_of(session, campaign_id)
    if previous in (states.CANCELLED, states.ARCHIVED):
        raise InputError(f"{campaign_id} is {previous}: a cancelled campaign cannot be resumed")
    if previous == states.RUNNING:
        return LifecycleResult(
            campaign_id, "resume", previous, previous, False, message=f"{campaign_id} was not paused"
        )
    states.set_state(session, campaign_id, states.RUNNING, now=now, by=actor)
    _audit(session, actor, "resume", campaign_id, now, previous=previous)
    return LifecycleResult(
        campaign_id,
        "resume",
        previous,
        states.RUNNING,
        True,
        message=f"{campaign_id} is running again: what fell due goes out in its send window, at the usual rate",
    )


def cancel(session: Session, campaign_id: str, *, actor: str, now: datetime, wall_now: datetime) -> LifecycleResult:
    """Irreversible. `wall_now` (real time) finds rows of dead workers whose lease ran out:
    nobody is sending them, so they are skipped too."""
    previous = states.state_of(session, campaign_id)
    if previous == states.ARCHIVED:
        raise InputError(f"{campaign_id} is archived (it was cancelled or finished before)")
    if previous == states.CANCELLED:
        return LifecycleResult(
            campaign_id, "cancel", previous, previous, False, message=f"{campaign_id} was already cancelled"
        )
    states.set_state(session, campaign_id, states.CANCELLED, now=now, by=actor)
    skipped = states.skip_queued(session, campaign_id, states.CANCEL_REASON, wall_now)
    ended = states.end_enrollments(session, campaign_id, states.CANCEL_REASON, now)
    _audit(session, actor, "cancel", campaign_id, now, previous=previous, skipped=skipped, ended=ended)
    return LifecycleResult(
        campaign_id,
        "cancel",
        previous,
        states.CANCELLED,
        True,
        skipped=skipped,
        ended=ended,
        message=f"{campaign_id} is cancelled: {skipped} queued email(s) never sent, {ended} enrollment(s) ended",
    )


def archive(session: Session, campaign_id: str, *, actor: str, now: datetime) -> LifecycleResult:
    previous = states.state_of(session, campaign_id)
    if previous == states.ARCHIVED:
        return LifecycleResult(
            campaign_id, "archive", previous, previous, False, message=f"{campaign_id} was already archived"
        )
    active, waiting = states.pending_work(session, campaign_id)
    if previous != states.CANCELLED and (active or waiting):
        raise InputError(
            f"{campaign_id} is {previous} with {active} active enrollment(s) and {waiting} queued email(s): "
            "only a cancelled or finished campaign can be archived"
        )
    states.set_state(session, campaign_id, states.ARCHIVED, now=now, by=actor)
    _audit(session, actor, "archive", campaign_id, now, previous=previous)
    return LifecycleResult(
        campaign_id,
        "archive",
        previous,
        states.ARCHIVED,
        True,
        message=f"{campaign_id} is archived: hidden from `cadence campaigns list` (see it with --all)",
    )


def _audit(session: Session, actor: str, action: str, campaign_id: str, now: datetime, **detail: object) -> None:
    record_audit(
        session, actor=actor, action=f"campaign.{action}", target=f"campaign:{campaign_id}", detail=detail, now=now
    )


# ---------------------------------------------------------------------------- for the doors

ACTIONS = ("pause", "resume", "cancel", "archive")


def known_campaigns(session: Session, campaigns_dir: Path) -> set[str]:
    """Every campaign staff can name: a file in the campaigns folder, or one the database
    still has rows of (its file may be gone)."""
    return {path.stem for path in list_campaigns(campaigns_dir)} | states.known_campaign_ids(session)


def newsletter_names(session: Session, campaigns_dir: Path) -> set[str]:
    """Every newsletter: a file in campaigns/newsletters/ or one scheduled at some point."""
    files = {path.stem for path in (campaigns_dir / "newsletters").glob("*.y*ml")}
    return files | {n.id for n in newsletter_rows.all_newsletters(session)}


def change_state(settings: Settings, name: str, action: str, *, actor: str) -> LifecycleResult:
    """Run `action` (one of ``ACTIONS``) on campaign `name` in one transaction, its audit entry
    included; NotFound (with "did you mean") for a name nobody knows."""
    if action not in ACTIONS:
        raise InputError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    now = settings.clock().now()
    with transaction(settings.database_url) as session:
        on_file = {path.stem for path in list_campaigns(settings.campaigns_dir)}
        known = on_file if name in on_file else known_campaigns(session, settings.campaigns_dir)
        campaign_id = resolve_campaign(name, known, newsletter_names(session, settings.campaigns_dir))
        if action == "pause":
            return pause(session, campaign_id, actor=actor, now=now)
        if action == "resume":
            return resume(session, campaign_id, actor=actor, now=now)
        if action == "cancel":
            return cancel(session, campaign_id, actor=actor, now=now, wall_now=wall_now())
        return archive(session, campaign_id, actor=actor, now=now)


def check_open_for_enrollment(session: Session, campaign_id: str) -> None:
    """Enrolling into a cancelled or archived campaign would put people in a series that never
    sends: refused. A paused campaign takes enrollments (they wait for the resume)."""
    state = states.state_of(session, campaign_id)
    if state in (states.CANCELLED, states.ARCHIVED):
        raise InputError(f"{campaign_id} is {state}: nobody can be enrolled in it any more")
