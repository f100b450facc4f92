"""Ending drips the moment their exit goal is met (Customer.io's "conversion goal": the
booking system tags someone ``booked`` and the next email never goes out).

Every door that changes a subscriber's tags or answers calls :func:`end_reached_goals` with the
subscribers it changed, in the same transaction: the staff API's and console's tagging and the
CLI's ``subscribers tag`` (``subscriber_tools.tag_subscribers``), imports
(``subscriber_import``), ``subscribers add`` (``subscribers.upsert_subscriber``) and answers
changed on the preferences page or the API (``preferences.update_answers``). The rule is
``core/drip_policy.exit_goal_reached``; the rows it leaves are the send path's
(``db/exit_goals.py``), so a goal is counted once whichever check saw it first. The send
path's own check stays: it is the safety net for a goal edited into a campaign file later, and
for a campaign whose file was broken when the tag arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from cadence.core import drip_policy
from cadence.core.campaign import Campaign
from cadence.core.schedule import subscriber_zone
from cadence.db import exit_goals as sql
from cadence.db.send_batch import tags_of
from cadence.errors import CadenceError
from cadence.files.campaigns import list_campaigns
from cadence.files.catalog import CampaignCatalog

__all__ = ["end_reached_goals", "goal_campaigns"]

log = logging.getLogger(__name__)

# Subscribers read per query: an import hands over a chunk at a time, a filter-wide tagging
# thousands at once.
CHUNK = 5000


def goal_campaigns(catalog: CampaignCatalog) -> list[Campaign]:
    """The campaigns of `catalog` that have an exit goal, read once per request or import. A
    broken file is left out (and logged): tagging must not fail because of it, its deliveries
    are held, and the send-time check applies its goal once the file is fixed."""
    found: list[Campaign] = []
    for path in list_campaigns(catalog.campaigns_dir):
        try:
            campaign = catalog.get(path.stem)
        except CadenceError as exc:
            log.error("campaign %s left out of exit goal checks, file missing/broken: %s", path.stem, exc)
            continue
        if campaign.exit_goal is not None:
            found.append(campaign)
    return found


def end_reached_goals(
    session: Session,
    campaigns: Sequence[Campaign],
    subscriber_ids: Iterable[int],
    now: datetime,
    *,
    tags_added: Collection[str] = (),
    answers_changed: bool = False,
) -> int:
    """End, as "goal reached", every active enrollment of `subscriber_ids` whose campaign's
    exit goal (among `campaigns`) they now meet, after the change they went through (tags
    `tags_added`, or `answers_changed`); their queued step is skipped, never sent. Returns the
    enrollments ended. Costs nothing when the change can meet no goal
    (``drip_policy.exit_goal_touched``); otherwise two reads per :data:`CHUNK` subscribers,
    however many rows an import brings."""
    by_id = {
        c.id: c
        for c in campaigns
        if drip_policy.exit_goal_touched(c.exit_goal, tags_added=tags_added, answers_changed=answers_changed)
    }
    ids = sorted(set(subscriber_ids))
    if not by_id or not ids:
        return 0
    ended = 0
    for start in range(0, len(ids), CHUNK):
        found = sql.candidates(session, ids[start : start + CHUNK], sorted(by_id))
        if not found:
            continue
        need_tags = any(by_id[c.campaign_id].exit_goal.tags for c in found)  # type: ignore[union-attr]
        tags = tags_of(session, {c.subscriber_id for c in found}) if need_tags else {}
        ends: list[sql.GoalEnd] = []
        for c in found:
            campaign = by_id[c.campaign_id]
            if c.next_step >= len(campaign.steps):
                continue  # the campaign lost steps: the send path completes it
            today = now.astimezone(subscriber_zone(c.timezone, campaign)).date()
            if drip_policy.exit_goal_reached(campaign.exit_goal, c.attributes, tags.get(c.subscriber_id, set()), today):
                step = campaign.steps[c.next_step]
                ends.append(sql.GoalEnd(c.enrollment_id, c.subscriber_id, c.campaign_id, c.next_step, step.id))
        state, reason = drip_policy.enrollment_end_after_skip(0, 1, drip_policy.GOAL_REACHED)
        ended += sql.end_enrollments(
            session, ends, now, skip_reason=drip_policy.GOAL_REACHED, state=state, end_reason=reason
        )
    return ended
