"""Every campaign at a glance (``cadence campaigns list``): its state, whether it is held, how
many people are in it and waiting for their next email, and when the next one goes out.

A campaign is listed if its file is in the campaigns folder or the database still has rows of
it: a campaign whose file was deleted shows as ``held`` with the reason, never disappears.
Archived campaigns are left out unless asked for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cadence.config import Settings
from cadence.db import campaign_states as states
from cadence.db.results import snapshot
from cadence.db.session import transaction
from cadence.files.campaigns import list_campaigns
from cadence.files.catalog import CampaignCatalog
from cadence.operations.campaign_progress import People
from cadence.operations.holds import file_problem
from cadence.operations.results import catch_up

__all__ = ["CampaignSummary", "campaign_summaries", "held_reason"]


@dataclass(frozen=True)
class CampaignSummary:
    id: str
    name: str
    state: str  # running, paused, cancelled, archived
    held: str | None  # why its emails wait although it is running (file missing/broken), or None
    enrolled: int
    active: int
    waiting: int  # people waiting for their next email (scheduled, or postponed: below)
    next_send_at: datetime | None
    sent: int
    queued: int  # queued emails: in the workers' hands, or ready for them now
    failed: int
    skipped: int
    postponed: int = 0  # queued emails postponed to the next send window (of `waiting` people)
    postponed_until: datetime | None = None

    @property
    def people(self) -> People:
        """The same people in ``campaigns status``'s words (its headline line)."""
        return People(self.enrolled, self.active, self.waiting, self.next_send_at, self.postponed, self.postponed_until)

    def document(self) -> dict[str, Any]:
        """JSON-ready. Campaigns and newsletters are both named by ``id`` in every list (``cadence
        campaigns list --json``, ``newsletters list --json``, ``GET /api/admin/campaigns`` and
        ``/newsletters``); ``campaign`` is the same value under the key this list had before,
        kept so scripts written against it keep working (issue 13 trial)."""
        return {
            "id": self.id,
            "campaign": self.id,
            "name": self.name,
            "state": self.state,
            "held": self.held,
            "enrolled": self.enrolled,
            "active": self.active,
            "waiting": self.waiting,
            "next_send_at": self.next_send_at.isoformat() if self.next_send_at else None,
            "sent": self.sent,
            "queued": self.queued,
            "failed": self.failed,
            "skipped": self.skipped,
            "postponed": self.postponed,
            "postponed_until": self.postponed_until.isoformat() if self.postponed_until else None,
        }


def held_reason(catalog: CampaignCatalog, campaign_id: str) -> str | None:
    problem = file_problem(catalog, campaign_id)
    return f"file missing/broken: {problem}" if problem is not None else None


@functools.cache
def _catalog(campaigns_dir: Path, base_url: str) -> CampaignCatalog:
    """One catalog per folder for the process: it reloads a campaign only when its file changes,
    where a new one parsed every YAML file on each call (80 ms of a console page, issue 14)."""
    return CampaignCatalog(campaigns_dir, base_url=base_url)


def campaign_summaries(settings: Settings, *, include_archived: bool = False) -> list[CampaignSummary]:
    catalog = _catalog(settings.campaigns_dir, settings.base_url)
    # Delivery counts come from the results rollups (db/results.py): fold what is new first, as
    # `cadence report` does, then read the rollups and the live rows as of one instant.
    catch_up(lambda: transaction(settings.database_url))
    with transaction(settings.database_url) as session:
        snapshot(session)
        ids = {p.stem for p in list_campaigns(settings.campaigns_dir)} | states.known_campaign_ids(session)
        saved = states.all_states(session)
        people = states.enrollment_summary(session)
        postponed = states.postponed_by_step(session, settings.clock().now())
        sends = states.delivery_counts(session)
    summaries = []
    for cid in sorted(ids):
        state = saved[cid].state if cid in saved else states.RUNNING
        if state == states.ARCHIVED and not include_archived:
            continue
        problem = held_reason(catalog, cid)
        name = catalog.get(cid).name if problem is None else cid
        # Only a campaign that would send is "held"; a cancelled or archived one sends nothing anyway.
        reason = problem if state in (states.RUNNING, states.PAUSED) else None
        who = People.of(people.get(cid, (0, 0, 0, None)), postponed.get(cid, {}))
        counts = sends.get(cid, {})
        summaries.append(
            CampaignSummary(
                cid,
                name,
                state,
                reason,
                who.enrolled,
                who.active,
                who.waiting,
                who.next_send_at,
                counts.get("sent", 0),
                counts.get("queued", 0) - who.postponed,
                counts.get("failed", 0),
                counts.get("skipped", 0),
                who.postponed,
                who.postponed_until,
            )
        )
    return summaries
