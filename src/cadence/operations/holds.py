"""Which campaigns may not send now, and why: staff stopped them (paused, cancelled, archived)
or their file is missing or broken. The tick leaves their work where it is (issue 13).

A missing or broken file never fails or cancels anything: deliveries stay queued, not
attempted, and enrollments keep their place, until the file is back. Every tick logs each
held campaign as an error (a JSON log line with ``campaign_id`` and ``reason``), so an
operator sees it; ``campaigns status`` and ``cadence doctor`` say it too.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.db import campaign_states
from cadence.db.session import transaction
from cadence.errors import CadenceError
from cadence.files.catalog import CampaignCatalog

log = logging.getLogger(__name__)

# Look again at most this many times per tick round for campaigns whose file is unusable (each
# look after the first excludes the ones found): more held campaigns than that at once are
# found by the next rounds.
_MAX_LOOKS = 8


class Catalog(Protocol):
    def get(self, campaign_id: str) -> Campaign: ...


def file_problem(catalog: Catalog, campaign_id: str) -> str | None:
    """Why the campaign's file cannot be used now, or None if it loads."""
    try:
        catalog.get(campaign_id)
    except CadenceError as exc:
        return str(exc)
    except OSError as exc:  # removed between the look-up and the read
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def held_campaigns(session: Session, catalog: Catalog, now: datetime, *, limit: int) -> dict[str, str]:
    """Campaign id -> why it is held, for every stopped campaign and every campaign the tick is
    about to claim work of whose file is missing or broken (logged as an error each time)."""
    held = {cid: state for cid, state in _stopped_states(session).items()}
    for _ in range(_MAX_LOOKS):
        found = {}
        for cid in sorted(campaign_states.due_campaign_ids(session, now, excluding=sorted(held), limit=limit)):
            problem = file_problem(catalog, cid)
            if problem is not None:
                found[cid] = f"file missing/broken: {problem}"
        if not found:
            break
        for cid, reason in found.items():
            log.error(
                "campaign %s is held: %s; its emails wait, nothing is failed or cancelled",
                cid,
                reason,
                extra={"campaign_id": cid, "reason": reason},
            )
        held.update(found)
    return held


def _stopped_states(session: Session) -> dict[str, str]:
    return {
        cid: row.state
        for cid, row in campaign_states.all_states(session).items()
        if row.state in campaign_states.STOPPED
    }


def held_by_file(settings: Settings) -> dict[str, str]:
    """Campaign id -> reason, for every campaign with people in it or emails waiting whose
    file is missing or broken (``cadence doctor``, ``campaigns list``). Reads every campaign
    with work once: a staff check, not the tick's bounded look."""
    catalog = CampaignCatalog(settings.campaigns_dir, base_url=settings.base_url)
    with transaction(settings.database_url) as session:
        with_work = campaign_states.campaigns_with_work(session)
        stopped = campaign_states.stopped_ids(session)
    held = {}
    for cid in sorted(with_work - stopped):
        problem = file_problem(catalog, cid)
        if problem is not None:
            held[cid] = f"file missing/broken: {problem}"
    return held
