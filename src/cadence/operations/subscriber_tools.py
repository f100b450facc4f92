"""The staff's subscriber tools (issue 13 item 4): search, show, export, erase, suppress,
unsuppress and tags. One function per action; each action that changes something writes one
audit entry in the same transaction (db/audit.py), naming the subscriber by id, never by
address, so the log holds no address after an erase.

Search and export stream the subscribers (cadence.db.subscriber_search); the filters that need
Python (a campaign's segment, attribute rules) are applied to the stream, so memory stays flat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.drip_policy import exit_goal_reached, postpone_until, skip_reason
from cadence.core.schedule import zone_for
from cadence.core.segments import choose_segment
from cadence.core.subscriber_fields import email_key, normalise_email
from cadence.core.suppression_keys import PLAIN, SuppressionKeys, plain_hash
from cadence.db import subscriber_search as sql
from cadence.db.audit import record_audit
from cadence.db.campaign_states import ARCHIVED, CANCEL_REASON, CANCELLED, PAUSED, RUNNING
from cadence.db.models import Delivery, Subscriber
from cadence.errors import CampaignError, InputError, NotFound
from cadence.operations.exit_goals import end_reached_goals

# moves to cadence.operations.privacy (issue 12)
from cadence.operations.privacy import erase, forget_old_pages
from cadence.operations.subscribers import end_enrollments, find_suppression

STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")
STAFF_REASON = "staff"  # the reason of a suppression a person on the staff added
_TAG = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,99}$")
MAX_PAGE = 500


@dataclass(frozen=True)
class SegmentFilter:
    campaign: Campaign
    segment_id: str


@dataclass(frozen=True)
class SubscriberFilter:
    """Who to find. Every given filter must hold. ``attrs``: attribute = value, compared
    without case (as segment rules compare)."""

    text: str | None = None
    statuses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    segment: SegmentFilter | None = None
    attrs: tuple[tuple[str, str], ...] = ()
    email: str | None = None  # exactly this address (any case); `text` matches part of one

    def describe(self) -> dict[str, Any]:
        return {
            **({"email": self.email} if self.email is not None else {}),
            "query": self.text,
            "status": list(self.statuses),
            "tag": list(self.tags),
            "segment": f"{self.segment.campaign.id}:{self.segment.segment_id}" if self.segment else None,
            "attr": [f"{k}={v}" for k, v in self.attrs],
        }


@dataclass(frozen=True)
class SubscriberSummary:
    id: int
    email: str
    first_name: str
    status: str
    tags: list[str]
    created_at: str


@dataclass(frozen=True)
class SearchPage:
    subscribers: list[SubscriberSummary]
    next_after: int | None  # pass as `after` for the next page; None on the last page


def describe_event(kind: str, data: Mapping[str, Any]) -> str:
    """An event's detail in a few words for the timeline (CLI, console, staff API): the link of
    a click, the dates of a pause, the answers that changed, how it happened."""
    how = str(data.get("how") or "")
    by = f" ({how})" if how else ""
    if kind == "click":
        return str(data.get("url", ""))
    if kind == "pause":
        return f"{data.get('weeks')} weeks, until {str(data.get('until', ''))[:10]}{by}"
    if kind == "resume":
        return f"had been paused until {str(data.get('was_paused_until', ''))[:10]}{by}"
    if kind == "answers_changed":
        changes = data.get("changes")
        if isinstance(changes, Mapping):
            parts = [
                f"{key}: {_shown(change.get('from'))} → {_shown(change.get('to'))}"
                for key, change in sorted(changes.items())
                if isinstance(change, Mapping)
            ]
            return ", ".join(parts) + by
    if kind == "exit_goal":
        return f"exit goal of {data.get('campaign', '')} reached before {data.get('before_step', '')}"
    return str(data.get("how", data.get("detail", "")))


PENDING = ("queued", "sending", "held")  # not sent yet: in the workers' hands, or a paused newsletter's


def local_time(at: datetime, timezone: str | None) -> str:
    """``2026-12-10 09:00 Europe/Paris``: `at` in the subscriber's zone (UTC without one)."""
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    moment = at if at.tzinfo else at.replace(tzinfo=UTC)
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M} {timezone if zone is not UTC else 'UTC'}"


def step_name(delivery: Delivery, campaign: Campaign | None) -> str:
    """The step's id for people: the tick queues a row before its step id is filled in at send
    time, so a queued or skipped row may have none yet; the campaign file has it."""
    if delivery.step_id:
        return delivery.step_id
    steps = campaign.steps if campaign is not None else ()
    return steps[delivery.step_index].id if delivery.step_index < len(steps) else f"step {delivery.step_index + 1}"


def pending_outlook(
    delivery: Delivery,
    subscriber: Subscriber,
    *,
    suppressed: bool,
    enrollment_state: str | None,
    campaign: Campaign | None,
    tags: Collection[str],
    campaign_state: str = RUNNING,
    default_zone: str | None = None,
) -> tuple[datetime, str, str]:
    """What will become of a delivery not sent yet, for the timeline: ``(when, "scheduled", "for
    <when in the zone the send uses>")``, ``(due, "will be skipped", "<why>; was due ...")``
    when the send path's own rule (core.drip_policy.skip_reason, checked at send time) already
    says it will not go: the enrollment ended, the goal is reached, they unsubscribed, or the
    campaign was cancelled; or ``(when, "held", "campaign paused; due ...")`` while staff
    paused the campaign or the newsletter (`campaign_state`, db.campaign_states; a paused
    newsletter's copies are ``held`` rows): the send path gives those back to the queue
    untouched (operations/delivery.py), so "scheduled" would be a promise it does not keep.
    A bare "queued" at the day it was queued read as "sending today" and as still pending after
    the goal was reached (the marketer's cold trial). `when` is the send path's too: a drip step
    of a subscriber who paused their emails waits for the first window after the pause
    (core.drip_policy.postpone_until), and the goal is judged on the send date in the zone the
    send path uses (core.schedule.subscriber_zone). The time is labelled with that zone: a
    subscriber without one gets the campaign's (a newsletter's: `default_zone`), not UTC, so
    the local time shown is the one the send is planned in."""
    at = delivery.not_before  # aware UTC, as every stored time (db.models.UTCDateTime)
    drip = enrollment_state is not None
    steps = len(campaign.steps) if campaign is not None else delivery.step_index + 1  # unknown: assume it exists
    goal = campaign.exit_goal if drip and campaign is not None else None
    zone = zone_for(subscriber.timezone, campaign.timezone if campaign is not None else default_zone)
    send_date = at.date()
    if drip and campaign is not None:
        paused = subscriber.paused_until
        later = postpone_until(
            now=at, due_at=delivery.due_at, paused_until=paused, window=campaign.send_window, tz=zone
        )
        at = later or at
        send_date = at.astimezone(zone).date()
    when = local_time(at, zone.key)
    reason = skip_reason(
        subscriber_status=subscriber.status,
        suppressed=suppressed,
        enrollment_state=enrollment_state or "active",
        step_index=delivery.step_index if drip else 0,
        step_count=steps if drip else 1,
        goal_reached=exit_goal_reached(goal, subscriber.attributes or {}, tags, send_date),
    )
    if not reason and campaign_state in (CANCELLED, ARCHIVED):  # as the send path: never sent
        reason = CANCEL_REASON
    if reason:
        due_text = local_time(delivery.not_before, zone.key)
        return delivery.not_before, "will be skipped", f"{reason}; was due {due_text}"
    if campaign_state == PAUSED or delivery.state == "held":
        kind = "campaign" if drip else "newsletter"
        return at, "held", f"{kind} paused; due {when}, sent after it is resumed"
    return at, "scheduled", f"for {when}"


def _shown(value: Any) -> str:
    return "(none)" if value in (None, "") else str(value)


@dataclass(frozen=True)
class TimelineEntry:
    at: str
    what: str  # scheduled, will be skipped, sent, failed, skipped, open, click, hard_bounce, unsubscribe...
    campaign: str = ""
    step: str = ""
    detail: str = ""


@dataclass(frozen=True)
class EnrollmentView:
    campaign: str
    state: str
    enrolled_at: str
    next_step: str | None
    next_send_at: str | None
    ended_at: str | None
    end_reason: str
    segment: str = ""  # the segment their answers put them in today ('' when not running)


@dataclass(frozen=True)
class SubscriberProfile:
    id: int
    email: str
    first_name: str
    status: str
    timezone: str | None
    source: str
    created_at: str
    confirmed_at: str | None
    unsubscribed_at: str | None
    paused_until: str | None
    suppressed: str | None  # the reason, or None
    attributes: dict[str, Any]
    consent: dict[str, Any]
    topics: list[str]
    tags: list[str]
    enrollments: list[EnrollmentView]
    timeline: list[TimelineEntry] = field(default_factory=list)


def check_statuses(values: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if value not in STATUSES:
            raise InputError(f"--status: {value!r} is not one of {', '.join(STATUSES)}")
    return tuple(values)


def check_tag(value: str, field_name: str = "tag") -> str:
    tag = value.strip().lower()
    if not _TAG.match(tag):
        raise InputError(
            f"{field_name}: {value!r} is not a tag (letters, digits, '-', '_', '.', ':'; up to 100 characters)"
        )
    return tag


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _matches(subscriber: Subscriber, wanted: SubscriberFilter, today: date) -> bool:
    for key, value in wanted.attrs:
        have = subscriber.attributes.get(key)
        if have is None or str(have).strip().lower() != value.strip().lower():
            return False
    if wanted.segment is not None:
        chosen = choose_segment(wanted.segment.campaign.segments, subscriber.attributes, today)
        return chosen.id == wanted.segment.segment_id
    return True


def matching(
    session: Session, wanted: SubscriberFilter, today: date, *, after: int | None = None
) -> Iterator[Subscriber]:
    """Every subscriber `wanted` finds, by id, streamed (see the module docstring)."""
    query = sql.search_query(
        text=wanted.text,
        statuses=wanted.statuses,
        tags=wanted.tags,
        after=after,
        email_key=email_key(wanted.email.strip()) if wanted.email is not None else None,
    )
    for subscriber in sql.stream(session, query):
        if _matches(subscriber, wanted, today):
            yield subscriber


def search_subscribers(
    session: Session, wanted: SubscriberFilter, today: date, *, limit: int = 50, after: int | None = None
) -> SearchPage:
    """One page of at most `limit` subscribers with an id above `after`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"--limit: give 1 to {MAX_PAGE}")
    found: list[Subscriber] = []
    more = False
    for subscriber in matching(session, wanted, today, after=after):
        if len(found) == limit:
            more = True
            break
        found.append(subscriber)
    tags = sql.tags_of(session, [s.id for s in found])
    return SearchPage(
        [SubscriberSummary(s.id, s.email, s.first_name, s.status, tags[s.id], s.created_at.isoformat()) for s in found],
        found[-1].id if more else None,
    )


def find(session: Session, email: str) -> Subscriber:
    """The subscriber with this address (any case); NotFound otherwise."""
    subscriber = sql.by_email_key(session, email_key(email.strip()))
    if subscriber is None:
        raise NotFound(f"no subscriber {email.strip()!r}")
    return subscriber


def subscriber_profile(
    session: Session,
    email: str,
    *,
    keys: SuppressionKeys,
    campaign_named: Callable[[str], Campaign | None],
    actor: str,
    now: datetime,
) -> SubscriberProfile:
    """Everything staff need to answer "what did this person get, and when?". Looking at a
    person's data is recorded in the audit log too (accountability, GDPR Art. 5(2))."""
    s = find(session, email)
    record_audit(session, actor=actor, action="subscriber.view", target=f"subscriber:{s.id}", now=now)
    deliveries = sql.deliveries_of(session, s.id)
    step_names = {d.id: (d.campaign_id, d.step_id) for d in deliveries}
    suppressed = find_suppression(session, s.email, keys)
    tags = sql.tags_of(session, [s.id])[s.id]
    enrollment_rows = sql.enrollments_of(session, s.id)
    states = {en.id: en.state for en in enrollment_rows}
    timeline: list[tuple[datetime, int, TimelineEntry]] = []
    run_states, zones = sql.campaign_conditions(session, (d.campaign_id for d in deliveries if d.state in PENDING))
    for d in deliveries:
        campaign = campaign_named(d.campaign_id) if d.enrollment_id is not None else None
        step = step_name(d, campaign)
        if d.state in PENDING:  # when it will go, in their zone (or why it will not)
            at, what, detail = pending_outlook(
                d,
                s,
                suppressed=suppressed is not None,
                enrollment_state=states.get(d.enrollment_id, "ended") if d.enrollment_id is not None else None,
                campaign=campaign,
                tags=tags,
                campaign_state=run_states.get(d.campaign_id, RUNNING),
                default_zone=zones.get(d.campaign_id),
            )
            timeline.append((at, 1, TimelineEntry(at.isoformat(), what, d.campaign_id, step, detail)))
        elif d.state == "sent" and d.sent_at is not None:
            detail = f"segment {d.segment_id}" if d.segment_id else ""
            timeline.append((d.sent_at, 1, TimelineEntry(d.sent_at.isoformat(), "sent", d.campaign_id, step, detail)))
        else:  # failed, skipped: every email has its line
            at = d.sent_at or d.not_before
            timeline.append((at, 1, TimelineEntry(at.isoformat(), d.state, d.campaign_id, step, d.last_error[:200])))
    for e in sql.events_of(session, s.id, list(step_names)):
        campaign_id, step = step_names.get(e.delivery_id or -1, ("", ""))
        detail = describe_event(e.kind, e.data)
        timeline.append(
            (e.created_at, 2, TimelineEntry(e.created_at.isoformat(), e.kind, campaign_id, step, detail[:200]))
        )
    timeline.sort(key=lambda t: (t[0], t[1]))
    # While a step is in the workers' hands (queued, or postponed to its window or past a pause)
    # the enrollment's own next_send_at is empty by design (no second tick may claim it): its
    # next email goes out at the delivery's not_before. Shown as such, so a person waiting for
    # their window no longer reads as "queued, no next send time" (issue 13 trial, Paris).
    in_flight = {d.enrollment_id: d.not_before for d in deliveries if d.state in ("queued", "sending")}
    enrollments = []
    for en in enrollment_rows:
        campaign_file = campaign_named(en.campaign_id)
        next_step: str | None = None
        segment = ""
        if en.state == "active":
            steps = campaign_file.steps if campaign_file else ()
            next_step = steps[en.next_step].id if en.next_step < len(steps) else f"step {en.next_step + 1}"
            if campaign_file is not None:  # "which segment did they land in" (issue 13 trial)
                try:
                    segment = choose_segment(campaign_file.segments, s.attributes, now.date()).id
                except CampaignError:
                    segment = ""
        enrollments.append(
            EnrollmentView(
                en.campaign_id,
                en.state,
                en.enrolled_at.isoformat(),
                next_step,
                _iso(en.next_send_at or (in_flight.get(en.id) if en.state == "active" else None)),
                _iso(en.ended_at),
                en.end_reason,
                segment,
            )
        )
    return SubscriberProfile(
        id=s.id,
        email=s.email,
        first_name=s.first_name,
        status=s.status,
        timezone=s.timezone,
        source=s.source,
        created_at=s.created_at.isoformat(),
        confirmed_at=_iso(s.confirmed_at),
        unsubscribed_at=_iso(s.unsubscribed_at),
        paused_until=_iso(s.paused_until),
        suppressed=suppressed,
        attributes=dict(s.attributes),
        consent=dict(s.consent),
        topics=[t.topic for t in sql.topics_of(session, s.id)],
        tags=tags,
        enrollments=enrollments,
        timeline=[entry for _, _, entry in timeline],
    )


def erase_subscriber(session: Session, email: str, *, keys: SuppressionKeys, actor: str, now: datetime) -> int:
    """Erase the subscriber exactly as their own erase link does (GDPR Art. 17): the row and
    everything about them go, a keyed suppression stays so no import brings them back. The
    caller runs :func:`after_erase` after the commit. Returns the erased id."""
    subscriber = find(session, email)
    subscriber_id = subscriber.id
    erase(session, subscriber, now, keys)
    record_audit(session, actor=actor, action="subscriber.erase", target=f"subscriber:{subscriber_id}", now=now)
    return subscriber_id


def after_erase(database_url: str) -> None:
    """After the erase committed: on SQLite, fold the write-ahead log back so the deleted rows'
    old pages (with the address) do not linger in ``-wal`` (cadence.operations.privacy)."""
    forget_old_pages(database_url)


def suppression_reason(session: Session, email: str, *, keys: SuppressionKeys) -> str | None:
    """Why the address is suppressed ("staff", "hard_bounce", "complaint", "erased"...), or None."""
    return find_suppression(session, email, keys)


@dataclass(frozen=True)
class SuppressionChange:
    subscriber_id: int
    changed: bool
    note: str = ""


def unsubscribe_subscriber(session: Session, email: str, *, reason: str, actor: str, now: datetime) -> str:
    """Unsubscribe someone who asked staff (on the phone, at the desk): as their own unsubscribe
    link does, their drips end and no newsletter reaches them; they stay on the list as
    "unsubscribed" and only their own signup brings them back. Returns "" or why nothing changed."""
    from cadence.operations.preferences import unsubscribe_everything

    subscriber = find(session, email)
    if not unsubscribe_everything(session, subscriber, now, how="staff"):
        return f"nothing to do: they are {subscriber.status}"
    record_audit(
        session,
        actor=actor,
        action="subscriber.unsubscribe",
        target=f"subscriber:{subscriber.id}",
        detail={"reason": reason.strip()[:200]},
        now=now,
    )
    return ""


def suppress_subscriber(session: Session, email: str, *, reason: str, actor: str, now: datetime) -> SuppressionChange:
    """Put the address on the suppression list ("staff", with `reason`) and end its drips.
    The status stays (it says what the person did); the send path checks the list."""
    reason = reason.strip()
    if not reason:
        raise InputError("--reason: say why (it is kept with the suppression)")
    subscriber = find(session, email)
    added = sql.add_suppression(session, plain_hash(subscriber.email), PLAIN, STAFF_REASON, reason[:2000], now)
    end_enrollments(session, subscriber.id, now, "suppressed by staff")
    record_audit(
        session,
        actor=actor,
        action="subscriber.suppress",
        target=f"subscriber:{subscriber.id}",
        detail={"reason": reason[:200], "added": added},
        now=now,
    )
    return SuppressionChange(subscriber.id, added, "" if added else "already suppressed")


def unsuppress_subscriber(
    session: Session, email: str, *, keys: SuppressionKeys, actor: str, now: datetime
) -> SuppressionChange:
    """Take the address off the suppression list (a staff suppression, a bounce or complaint).
    A bounced or complained subscriber becomes active again; their ended drips stay ended
    (enroll them again). An erase's suppression is not lifted here: only the person's own
    confirmed signup lifts it."""
    address = normalise_email(email.strip(), "email")
    subscriber = sql.by_email_key(session, email_key(address))
    reason = find_suppression(session, address, keys)
    if subscriber is None and reason is None:
        raise NotFound(f"no subscriber {address!r} and the address is not suppressed")
    if reason == "erased":
        raise InputError(f"{address} was erased at the person's request: only their own signup can lift it")
    removed = sql.remove_suppression(session, plain_hash(address))
    note = ""
    if subscriber is not None and subscriber.status in ("bounced", "complained"):
        subscriber.status = "active"
        subscriber.soft_bounces = 0
        subscriber.updated_at = now
        note = "active again; enroll them in a campaign to send its emails"
    target = f"subscriber:{subscriber.id}" if subscriber is not None else "address"
    record_audit(
        session,
        actor=actor,
        action="subscriber.unsuppress",
        target=target,
        detail={"was": reason, "removed": removed},
        now=now,
    )
    return SuppressionChange(
        subscriber.id if subscriber else 0, removed, note or ("" if removed else "was not suppressed")
    )


@dataclass(frozen=True)
class TagChange:
    subscribers: int
    added: int
    removed: int
    goals_reached: int = 0  # drip enrollments the new tags ended (operations/exit_goals.py)


def tag_subscribers(
    session: Session,
    *,
    emails: Sequence[str] = (),
    wanted: SubscriberFilter | None = None,
    today: date,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    actor: str,
    now: datetime,
    goals: Sequence[Campaign] = (),
) -> TagChange:
    """Add and remove tags on the given addresses, or on everyone `wanted` finds. Every address
    must exist (NotFound names the first that does not; nothing is changed). `goals`: the
    campaigns with an exit goal (``exit_goals.goal_campaigns``); an added tag that meets one
    ends those drips at once."""
    add_tags = [check_tag(t, "--add") for t in add]
    remove_tags = [check_tag(t, "--remove") for t in remove]
    if not add_tags and not remove_tags:
        raise InputError("give --add TAG or --remove TAG")
    if bool(emails) == (wanted is not None):
        raise InputError("give addresses or a search filter, not both")
    if emails:
        ids = [find(session, e).id for e in emails]
    else:
        assert wanted is not None
        ids = [s.id for s in matching(session, wanted, today)]
    added = removed = 0
    for start in range(0, len(ids), sql.STREAM_CHUNK):
        part = ids[start : start + sql.STREAM_CHUNK]
        removed += sql.remove_tags(session, part, remove_tags)
        added += sql.add_tags(session, part, add_tags, now)
    target = f"subscriber:{ids[0]}" if len(ids) == 1 else "subscribers"
    detail: dict[str, Any] = {"add": add_tags, "remove": remove_tags, "subscribers": len(ids)}
    if wanted is not None:
        detail["filter"] = wanted.describe()
    reached = end_reached_goals(session, goals, ids, now, tags_added=add_tags) if added else 0
    if reached:
        detail["goals_reached"] = reached
    record_audit(session, actor=actor, action="subscribers.tag", target=target, detail=detail, now=now)
    return TagChange(len(ids), added, removed, reached)
