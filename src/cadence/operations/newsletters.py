"""Newsletters for staff: check, preview, count the audience, schedule, pause, resume, cancel,
list, report, send a test (issue 13). Every door (CLI today, API and console next) calls these.

Each takes the settings (the database and the directories), `now` from the caller's clock and,
for changes, the `actor` written to the audit log (``cli:<os user>``, ``user:<email>``...). A
change and its audit entry commit together. Sending itself is the tick and the workers'
(operations/newsletter_copies.py): scheduling only writes the ledger rows, each with its own ``not_before``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from sqlalchemy.orm import Session

from cadence.config import Settings
from cadence.core.campaign import Campaign
from cadence.core.message import Address, build_mime
from cadence.core.newsletter import (
    Newsletter,
    SendTime,
    effective_state,
    in_audience,
    parse_send_time,
    send_instant,
    transition,
)
from cadence.core.newsletter_content import EVERYONE, lock, newsletter_loader, render_campaign
from cadence.core.newsletter_draft import NameTaken, VersionConflict, draft_newsletter
from cadence.core.render import Renderer
from cadence.core.subscriber_fields import email_hash, normalise_email
from cadence.db import newsletter_audience as audience_store
from cadence.db import newsletter_drafts as drafts_store
from cadence.db import newsletters as store
from cadence.db.audit import record_audit
from cadence.db.models import Newsletter as NewsletterRow
from cadence.db.session import transaction
from cadence.errors import CampaignError, InputError, NotFound
from cadence.files.newsletters import find_newsletter, list_newsletters, referenced_campaigns
from cadence.operations.enrollment import find_subscriber
from cadence.operations.newsletter_copies import build_copy
from cadence.operations.runtime import Runtime
from cadence.review.previews import DEFAULT_SAMPLE_SUBSCRIBERS, Problem, validate_campaign, write_preview

__all__ = [
    "AudienceCount",
    "Loaded",
    "audience",
    "cancel",
    "count_audience",
    "find",
    "list_all",
    "load",
    "loaded_from",
    "pause",
    "preview",
    "resume",
    "schedule",
    "send_test",
    "status",
    "validate",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_TEST_ADDRESSES = 10  # a test goes to the team, not to a list
_LOCKED_STATES = ("sending", "sent", "paused")


@dataclass(frozen=True)
class Loaded:
    """A newsletter file, the drips it refers to, and the campaign the renderer compiles."""

    newsletter: Newsletter
    counted: Campaign  # whose segments count (and perhaps choose) the audience
    campaign: Campaign
    renderer: Renderer


def find(settings: Settings, name: str, *, session: Session | None = None) -> Newsletter:
    """The newsletter `name`: its file (``campaigns/newsletters/<name>.yaml``) or, if there is
    none, the stored draft of that name (written through the API or the console; its current
    version). Both kinds are then checked, scheduled, locked and sent by the same code. Pass
    the caller's `session` when inside a transaction (SQLite allows one writer at a time)."""
    try:
        return find_newsletter(name, settings.campaigns_dir)
    except NotFound:
        if not _NAME.match(name):
            raise
        if session is None:
            with transaction(settings.database_url) as own:
                return find(settings, name, session=own)
        stored = drafts_store.draft(session, name)
        if stored is None:
            raise
        return draft_newsletter(stored.id, stored.document, version=stored.version)


def load(
    settings: Settings,
    name: str,
    scheduled_at: datetime,
    *,
    for_sending: bool = False,
    session: Session | None = None,
) -> Loaded:
    """The newsletter `name` (a file or a stored draft) and its references. Its guide and site
    links point at the sample host for review (validate, preview, a test), as the drips' review
    tools do (cadence.files.guide_pages), and at ``CADENCE_BASE_URL`` `for_sending` (the locked
    version)."""
    found = find(settings, name, session=session)
    return loaded_from(settings, found, scheduled_at, for_sending=for_sending)


def loaded_from(
    settings: Settings, newsletter: Newsletter, scheduled_at: datetime, *, for_sending: bool = False
) -> Loaded:
    """`newsletter` (read from anywhere: a file, a stored draft, a composer's unsaved fields)
    with the drips it refers to, checked, and its renderer."""
    base_url = settings.base_url if for_sending else None
    based_on, counted = referenced_campaigns(
        newsletter, settings.campaigns_dir, settings.templates_dir, base_url=base_url
    )
    renderer = Renderer(newsletter_loader(FileSystemLoader(str(settings.templates_dir))))
    return Loaded(newsletter, counted, render_campaign(newsletter, based_on, scheduled_at), renderer)


def validate(settings: Settings, name: str, now: datetime) -> tuple[Loaded, list[Problem]]:
    """Every problem of the file and its email (the drips' checks: subject, preheader, links,
    postal address, unsubscribe link...), and an edit made after sending started."""
    loaded = load(settings, name, now)
    problems = validate_campaign(loaded.campaign, loaded.renderer)
    with transaction(settings.database_url) as session:
        row = session.get(NewsletterRow, loaded.newsletter.id)
        if row is not None and row.state in _LOCKED_STATES and not problems:
            edited = _edited_message(settings, row, session)
            if edited:
                problems.append(Problem(loaded.newsletter.source, None, edited))
    return loaded, problems


def preview(settings: Settings, name: str, out: Path, now: datetime) -> Path:
    """Write the newsletter as HTML and an index page (as ``campaigns preview`` does)."""
    loaded = load(settings, name, now)
    return write_preview(loaded.campaign, loaded.renderer, out)


# ---------------------------------------------------------------------------- audience


@dataclass
class AudienceCount:
    newsletter_id: str
    segments_of: str  # the drip whose segments are counted
    per_segment: dict[str, int] = field(default_factory=dict)
    segment_names: dict[str, str] = field(default_factory=dict)
    suppressed: int = 0  # would match but their address is suppressed: not counted
    recipients: list[tuple[int, str, str | None]] = field(default_factory=list, repr=False)

    @property
    def total(self) -> int:
        return sum(self.per_segment.values())

    def document(self) -> dict[str, Any]:
        return {
            "newsletter": self.newsletter_id,
            "segments_of": self.segments_of,
            "total": self.total,
            "suppressed_not_counted": self.suppressed,
            "segments": [
                {"id": sid, "name": self.segment_names.get(sid, sid), "recipients": count}
                for sid, count in self.per_segment.items()
            ],
        }


def _count(session: Any, loaded: Loaded, now: datetime) -> AudienceCount:
    newsletter, counted = loaded.newsletter, loaded.counted
    result = AudienceCount(
        newsletter.id, counted.id, {s.id: 0 for s in counted.segments}, {s.id: s.name for s in counted.segments}
    )
    audience_rules = newsletter.audience
    chosen: list[tuple[int, str, str | None, str]] = []
    for person in audience_store.audience_candidates(session, audience_rules.topics, audience_rules.tags):
        segment = in_audience(
            audience_rules,
            attributes=person.attributes,
            topics=person.topics,
            tags=person.tags,
            segments=counted.segments,
            today=now.date(),
        )
        if segment is False:
            continue
        chosen.append((person.id, segment.id if segment else EVERYONE.id, person.timezone, person.email))
    suppressed = audience_store.suppressed_among(session, [email_hash(email) for *_, email in chosen])
    for subscriber_id, segment_id, timezone, email in chosen:
        if email_hash(email) in suppressed:
            result.suppressed += 1
            continue
        result.per_segment[segment_id] = result.per_segment.get(segment_id, 0) + 1
        result.recipients.append((subscriber_id, segment_id, timezone))
    return result


def audience(settings: Settings, name: str, now: datetime) -> AudienceCount:
    """Who would get the newsletter if it were scheduled now, per segment."""
    return count_audience(settings, load(settings, name, now), now)


def count_audience(settings: Settings, loaded: Loaded, now: datetime) -> AudienceCount:
    """Who would get `loaded` if it were scheduled now, per segment (nothing is written)."""
    with transaction(settings.database_url) as session:
        return _count(session, loaded, now)


# ---------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class Scheduled:
    newsletter_id: str
    recipients: int
    new_copies: int
    dropped: int  # queued copies of people no longer in the audience (scheduled again)
    first_due: datetime
    last_due: datetime
    send_at: str
    again: bool


def schedule(
    settings: Settings,
    name: str,
    *,
    at: str | None,
    actor: str,
    now: datetime,
    expected_version: int | None = None,
) -> Scheduled:
    """Check the newsletter, lock its version, and write one queued ledger row per recipient,
    due at the send time (in each recipient's zone for a local time). Scheduling again before
    sending started replaces the version, the audience and the time; after, it is refused.
    For a stored draft, `expected_version` (if given) must be its current version."""
    found = find(settings, name)  # once: both loads below must see the same version of a draft
    loaded = loaded_from(settings, found, now)
    problems = validate_campaign(loaded.campaign, loaded.renderer)
    if problems:
        listed = "; ".join(str(p) for p in problems[:3])
        raise CampaignError(f"{loaded.newsletter.source}: not scheduled, {len(problems)} problem(s): {listed}")
    if not at and not loaded.newsletter.send_time_given:
        raise InputError(
            f"{loaded.newsletter.id}: no send time: give one with --at "
            '("2027-01-12 09:00 local", an instant with its offset, or now) or as send_at'
        )
    send_time = parse_send_time(at, "--at") if at else loaded.newsletter.send_time
    _not_in_the_past(send_time, now)
    sendable = loaded_from(settings, found, now, for_sending=True)
    newsletter, campaign = sendable.newsletter, sendable.campaign
    variant = sendable.renderer.variant(campaign, campaign.steps[0], EVERYONE)
    content_hash, content = lock(campaign, variant)
    with transaction(settings.database_url) as session:
        row = store.lock_newsletter(session, newsletter.id, now, actor)
        if row.state in _LOCKED_STATES:
            raise InputError(_edited_message(settings, row, session) or _started_message(row))
        again = row.state != "draft"
        transition(row.state, "schedule", newsletter.id)
        _same_draft_version(session, newsletter, expected_version)
        count = _count(session, loaded, now)
        if not count.recipients:
            hint = ""
            if newsletter.audience.topics:  # an imported list has no topics unless asked (issue 13 trial)
                topics = ",".join(newsletter.audience.topics)
                hint = (
                    f" (it goes to people on the topics {topics}: they join at signup, or by "
                    f"`cadence subscribers import FILE --topic {newsletter.audience.topics[0]}`)"
                )
            raise InputError(f"newsletter {newsletter.id!r}: nobody in the audience, nothing scheduled{hint}")
        copies = [
            (sid, segment_id, send_instant(send_time, tz, campaign.timezone, now))
            for sid, segment_id, tz in count.recipients
        ]
        row.name, row.subject, row.state = newsletter.name, variant.subject_source[:200], "scheduled"
        row.content_hash, row.content = content_hash, content
        row.audience = {"topics": list(newsletter.audience.topics), "tags": list(newsletter.audience.tags)}
        row.send_at, row.recipients, row.scheduled_at = str(send_time)[:60], len(copies), now
        row.changed_at, row.changed_by = now, actor
        session.flush()
        dropped = 0
        if again:
            store.retime_unsent(session, newsletter.id, copies)
            keep = {sid for sid, _, _ in copies}
            dropped = store.skip_unsent_except(session, newsletter.id, keep, "no longer in the audience")
        created = store.insert_copies(session, newsletter.id, copies, now)
        dues = [due for _, _, due in copies]
        record_audit(
            session,
            actor=actor,
            action="newsletter.schedule",
            target=f"newsletter:{newsletter.id}",
            detail={"send_at": str(send_time), "recipients": len(copies), "content_hash": content_hash},
            now=now,
        )
    return Scheduled(newsletter.id, len(copies), created, dropped, min(dues), max(dues), str(send_time), again)


def _same_draft_version(session: Any, newsletter: Newsletter, expected: int | None) -> None:
    """The version being locked is still the stored draft's current one (an edit saved while
    this schedule was checking would otherwise be silently left out), and a file newsletter
    does not share its name with a stored one. Called with the ``newsletters`` row locked;
    db/newsletter_drafts.py explains the lock order."""
    stored = drafts_store.locked_draft(session, newsletter.id)
    if newsletter.draft_version is None:
        if stored is not None:
            raise NameTaken(
                f"newsletter {newsletter.id!r} is both a file and a stored newsletter: rename or delete one"
            )
        return
    if stored is None:
        raise NotFound(f"newsletter {newsletter.id!r} was deleted meanwhile: nothing scheduled")
    for version in (newsletter.draft_version, expected):
        if version is not None and stored.version != version:
            raise VersionConflict(newsletter.id, version, stored.version)


def _not_in_the_past(send_time: SendTime, now: datetime) -> None:
    if send_time.instant is not None and send_time.instant < now - timedelta(minutes=5):
        raise InputError(f"send time {send_time} is in the past: give a later time, or now")
    if send_time.local_day is not None and send_time.local_time is not None:
        # The last place on Earth where that local time happens is UTC-12.
        latest = datetime.combine(send_time.local_day, send_time.local_time, UTC) + timedelta(hours=12)
        if latest < now:
            raise InputError(f"send time {send_time} is in the past in every time zone: give a later day")


def _started_message(row: NewsletterRow) -> str:
    return (
        f"newsletter {row.id!r} is {row.state}: it cannot be scheduled again (pause, resume or cancel it; "
        "to send new text, write a new newsletter file)"
    )


def _edited_message(settings: Settings, row: NewsletterRow, session: Session) -> str:
    """A clear refusal if the file (or a template it uses) changed after sending started."""
    try:
        loaded = load(settings, row.id, row.scheduled_at, for_sending=True, session=session)
        current, _ = lock(loaded.campaign, loaded.renderer.variant(loaded.campaign, loaded.campaign.steps[0], EVERYONE))
    except (CampaignError, NotFound, InputError) as exc:
        current = f"unreadable: {exc}"
    if current == row.content_hash:
        return ""
    started = row.started_at or row.scheduled_at
    return (
        f"newsletter {row.id!r} was edited after sending started ({started:%Y-%m-%d %H:%M} UTC): "
        "the edit is refused and the version locked then is what goes out; to send the new text, "
        "write it as a new newsletter file"
    )


# ---------------------------------------------------------------------------- lifecycle


def _change(settings: Settings, name: str, action: str, actor: str, now: datetime) -> tuple[str, int]:
    with transaction(settings.database_url) as session:
        row = store.locked_newsletter(session, name)
        if row is None or row.state == "draft":
            raise NotFound(f"newsletter {name!r} was never scheduled (nothing to {action})")
        counts = store.copy_counts(session, [name]).get(name, {})
        current = _state_of(row, counts)
        row.state = transition(current, action, name)
        row.changed_at, row.changed_by = now, actor
        if action == "pause":
            moved = store.hold_rows(session, name)
        elif action == "resume":
            moved = store.release_rows(session, name)
            if row.started_at is not None:
                row.state = "sending"
        else:
            moved = store.cancel_rows(session, name, "newsletter cancelled")
        store.mirror_campaign_state(session, name, row.state, actor, now)
        record_audit(
            session,
            actor=actor,
            action=f"newsletter.{action}",
            target=f"newsletter:{name}",
            detail={"copies": moved},
            now=now,
        )
        return row.state, moved


def pause(settings: Settings, name: str, *, actor: str, now: datetime) -> tuple[str, int]:
    """Hold every copy not yet sent (those in a worker's hands are held when it reaches them)."""
    return _change(settings, name, "pause", actor, now)


def resume(settings: Settings, name: str, *, actor: str, now: datetime) -> tuple[str, int]:
    """Queue the held copies again; each keeps its send time (past ones go at the next tick)."""
    return _change(settings, name, "resume", actor, now)


def cancel(settings: Settings, name: str, *, actor: str, now: datetime) -> tuple[str, int]:
    """No copy not yet sent will ever be sent."""
    return _change(settings, name, "cancel", actor, now)


def _state_of(row: NewsletterRow, counts: dict[str, int]) -> str:
    pending = sum(counts.get(s, 0) for s in store.PENDING)
    finished = sum(n for s, n in counts.items() if s not in store.PENDING)
    state = effective_state(row.state, pending=pending, finished=finished)
    row.state = state
    return state


# ---------------------------------------------------------------------------- list, status


def exists(settings: Settings, name: str) -> bool:
    """Whether `name` is a newsletter (a file, a stored draft or a scheduled one): a file check
    and two primary-key reads, where :func:`list_all` would count every newsletter's copies."""
    if any(path.stem == name for path in list_newsletters(settings.campaigns_dir)):
        return True
    with transaction(settings.database_url) as session:
        return session.get(NewsletterRow, name) is not None or drafts_store.draft(session, name) is not None


def list_all(settings: Settings) -> list[dict[str, Any]]:
    """Every newsletter: scheduled ones from the database, drafts from their files."""
    found: dict[str, dict[str, Any]] = {}
    for path in list_newsletters(settings.campaigns_dir):
        found[path.stem] = {"id": path.stem, "state": "draft", "subject": "", "send_at": "", "recipients": 0}
    with transaction(settings.database_url) as session:
        for stored in drafts_store.all_drafts(session):
            document = stored.document
            found.setdefault(
                stored.id,
                {
                    "id": stored.id,
                    "state": "draft",
                    "subject": str(document.get("subject") or ""),
                    "send_at": str(document.get("send_at") or ""),
                    "recipients": 0,
                },
            )
        rows = store.all_newsletters(session)
        counts = store.copy_counts(session, [r.id for r in rows])
        for row in rows:
            state = _state_of(row, counts.get(row.id, {}))
            found[row.id] = {
                "id": row.id,
                "state": state,
                "subject": row.subject,
                "send_at": row.send_at,
                "recipients": row.recipients,
                "sent": counts.get(row.id, {}).get("sent", 0),
            }
    return sorted(found.values(), key=lambda item: item["id"])


def status(settings: Settings, name: str) -> dict[str, Any]:
    """Sent, failed, skipped, queued (``waiting``: the same number, the key scripts used first);
    unique opens and clicks; unsubscribes; per segment."""
    with transaction(settings.database_url) as session:
        row = session.get(NewsletterRow, name)
        if row is None:
            find(settings, name, session=session)  # NotFound if there is no such file or stored draft either
            return {"id": name, "state": "draft", "recipients": 0}
        counts = store.copy_counts(session, [name]).get(name, {})
        state = _state_of(row, counts)
        events = store.event_counts(session, name)
        segments = store.segment_counts(session, name)
        return {
            "id": name,
            "state": state,
            "subject": row.subject,
            "send_at": row.send_at,
            "content_hash": row.content_hash,
            "recipients": row.recipients,
            "sent": counts.get("sent", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "queued": sum(counts.get(s, 0) for s in store.PENDING),
            "waiting": sum(counts.get(s, 0) for s in store.PENDING),
            **events,
            "segments": {sid: dict(by_state) for sid, by_state in sorted(segments.items())},
        }


# ---------------------------------------------------------------------------- test send


def send_test(
    runtime: Runtime,
    name: str,
    to: list[str],
    *,
    actor: str,
    now: datetime,
    subscriber_email: str | None = None,
) -> int:
    """Send the newsletter as its file is now to `to`, subject marked ``[TEST]``, through the
    real transport; no ledger row, nothing counted in the reports. Filled with a sample
    reader's data, or with the subscriber `subscriber_email`'s (name, answers: what they would
    read), as a drip's test send can be. Links point at the neutral ``/manage`` page (a
    tester's click must not unsubscribe anybody, least of all the subscriber whose data it is)."""
    if not to:
        raise InputError("--to: give at least one address")
    if len(to) > MAX_TEST_ADDRESSES:
        raise InputError(f"--to: at most {MAX_TEST_ADDRESSES} addresses for a test")
    addresses = [normalise_email(address, "--to") for address in to]
    settings = runtime.settings
    loaded = load(settings, name, now, for_sending=True)
    data: dict[str, Any] | None = None
    data_of = "sample"
    if subscriber_email is not None:
        with transaction(settings.database_url) as session:
            found = find_subscriber(session, subscriber_email)
            data = {"first_name": found.first_name, "email": found.email, "attributes": dict(found.attributes or {})}
            data_of = f"subscriber:{found.id}"  # whose data left for `to` (the audit entry; never the address)
    variant = loaded.renderer.variant(loaded.campaign, loaded.campaign.steps[0], EVERYONE)
    manage = f"{settings.base_url}/manage"
    links = {"unsubscribe": manage, "preferences": manage, "web_view": manage}
    sample = DEFAULT_SAMPLE_SUBSCRIBERS[0]
    pairs = []
    for address in addresses:
        message = build_copy(
            loaded.campaign,
            variant,
            delivery_id=10**12 + secrets.randbits(32),  # never a real delivery's Message-ID
            secret_key=settings.secret_key,
            to=Address(address),
            subscriber=data if data is not None else {**sample, "email": address},
            links=links,
            link_url=None,
            pixel_url=None,
            subject_prefix="[TEST] ",
        )
        mime = build_mime(message, date=now, signer=runtime.signer) if runtime.transport.needs_mime else b""
        pairs.append((message, mime))
    results = runtime.transport.send_many(pairs)
    refused = [f"{m.to.email}: {r.detail}" for (m, _), r in zip(pairs, results, strict=True) if r.status != "sent"]
    with transaction(settings.database_url) as session:
        record_audit(
            session,
            actor=actor,
            action="newsletter.send_test",
            target=f"newsletter:{loaded.newsletter.id}",
            detail={"to": addresses, "refused": len(refused), "data_of": data_of},
            now=now,
        )
    if refused:
        raise InputError("test not sent to " + "; ".join(refused))
    return len(pairs)
