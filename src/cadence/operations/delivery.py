"""The send path for leased deliveries: re-check, render, build, send, record, advance.

Everything is checked *at send time* (ARCHITECTURE.md): a subscriber who unsubscribed, was
suppressed, paused, reached an exit goal or changed segment after the tick queued the delivery
is treated as they are now, not as they were. Results are recorded (committed) after every
group of messages: at most ``settings.commit_every`` messages and about ``GROUP_SECONDS`` of
sending, which bounds the duplicate window after a crash in both count and time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from cadence.clock import wall_now
from cadence.core import drip_policy
from cadence.core.campaign import Campaign, Segment
from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.core.render import CompiledVariant, render_email
from cadence.core.schedule import subscriber_zone
from cadence.core.segments import choose_segment
from cadence.core.tokens import link_signature, make_token
from cadence.core.uri_parity import balance_uri_count, variant_uri_count
from cadence.db import campaign_states, queries, send_batch
from cadence.db.models import Delivery, Enrollment, Subscriber
from cadence.db.send_batch import DueRow as _Due
from cadence.db.session import engine_for, transaction
from cadence.errors import CadenceError, ConfigError, NotFound, TransientSendError, TransportError
from cadence.monitoring import metrics
from cadence.operations import newsletter_copies
from cadence.operations.batch_ledger import DATABASE_GONE, BatchLedger
from cadence.operations.runtime import Runtime
from cadence.operations.send_results import Composed, PreparedSend, SendOutcome
from cadence.operations.transactional_send import prepare_transactional
from cadence.transports.base import SendResult

__all__ = [
    "GROUP_SECONDS",
    "RECHECK_EVERY",
    "ensure_links",
    "prepare_and_send",
]

log = logging.getLogger(__name__)

# During a batch, re-check the remaining recipients this often (unsubscribes honoured within it).
RECHECK_EVERY = timedelta(seconds=1)
# ... and the campaign's state this often: a pause or cancel stops a running batch within about
# a second (issue 13). One join of the batch's own rows with campaign_states: cheap.
STATE_CHECK_EVERY = timedelta(seconds=0.5)
# A group (one transport call, one ledger commit) aims at this much sending time: at full speed
# up to commit_every messages share a commit (a commit per email cost ~30 % of the throughput,
# bench/send_throughput.py); against a slow server or a rate limit a group shrinks to one
# message, so results are recorded and unsubscribes re-checked as they would be one by one.
GROUP_SECONDS = 0.1


class _Pace:
    """This process's recent seconds per message (one transport per process), which sizes the
    next group."""

    seconds_per_message = 0.0

    @classmethod
    def group_size(cls, limit: int) -> int:
        if cls.seconds_per_message <= 0:
            return 1  # nothing measured yet: one message tells
        return max(1, min(limit, int(GROUP_SECONDS / cls.seconds_per_message)))

    @classmethod
    def observe(cls, seconds: float, messages: int) -> None:
        latest = seconds / messages
        previous = cls.seconds_per_message
        cls.seconds_per_message = latest if previous <= 0 else (previous + latest) / 2


def prepare_and_send(
    runtime: Runtime,
    delivery_ids: Sequence[int],
    now: datetime,
    *,
    token: str,
    abandoned: Mapping[int, int] | None = None,
) -> SendOutcome:
    """Check, render and send leased deliveries; record every result. See the module docstring.
    `now` is the business clock, read once for the batch by the caller (the claim used it too);
    `token` the claim's lease token. `abandoned`: of these, the rows whose worker stopped on
    them ``max_attempts`` times (their attempts, by id: ``queries.abandoned_among``); they are
    given up, not sent again.

    An unexpected exception of our own code (a bug, a DKIM signer fault) never leaves the batch
    leased for ``lease_seconds``: the rows not sent are let go at once (``_release``), their
    re-claim counting an attempt, and the exception is logged once with their ids."""
    outcome = SendOutcome()
    try:
        prepared, others = _load_and_prepare(runtime, delivery_ids, now, outcome, token, abandoned or {})
        if others:
            # Dispatch by kind: newsletter copies (no enrollment, so not among the drip rows) are
            # checked and rendered by their own module, then sent and recorded with the rest. A
            # batch of drip steps alone never pays for this second look.
            prepared += newsletter_copies.load_and_prepare(runtime, others, now, outcome)
    except BaseException as exc:
        # Link ids cached during a transaction that rolled back may not exist: forget them.
        _LINK_CACHE.clear()
        if not _ours(exc):
            raise
        # The preparing transaction rolled back: every row is still leased, none was sent.
        _release(runtime, delivery_ids, exc, outcome, token, now)
        return outcome
    _send_prepared(runtime, prepared, now, outcome)
    return outcome


def _ours(exc: BaseException) -> bool:
    """Whether `exc` is an unexpected error raised by our own code, to be handled by letting
    go of the batch: not a kill or an interrupt (BaseException), not a CadenceError (each has
    its own rule: an outage, a config error) and not a lost database (the lease rule,
    batch_ledger.py)."""
    return isinstance(exc, Exception) and not isinstance(exc, (CadenceError, *DATABASE_GONE))


def _release(
    runtime: Runtime,
    ids: Sequence[int],
    exc: BaseException,
    outcome: SendOutcome,
    token: str,
    now: datetime,
    *,
    ledger: BatchLedger | None = None,
) -> None:
    """Let go of leased rows not sent because our code raised `exc`, and log it once (ids, no
    address). If even that fails, the rows come back when their lease runs out."""
    if not ids:
        return
    error = f"{type(exc).__name__}: {exc}"
    log.error(
        "unexpected error while sending; %d deliveries let go, to be tried again: %s",
        len(ids),
        error,
        exc_info=exc,
        extra={"delivery_ids": list(ids)},
    )
    retry = partial(drip_policy.retry_at, now, max_attempts=runtime.settings.max_attempts)
    release = partial(
        queries.release_after_error, ids=list(ids), token=token, wall_now=wall_now(), error=error, retry_at=retry
    )
    if ledger is not None:
        ledger.write(release)
    else:
        with transaction(runtime.settings.database_url) as session:
            release(session.connection())
    outcome.retrying += len(ids)


def _load_and_prepare(
    runtime: Runtime,
    delivery_ids: Sequence[int],
    now: datetime,
    outcome: SendOutcome,
    token: str,
    abandoned: Mapping[int, int],
) -> tuple[list[PreparedSend], list[int]]:
    """Lease-holding rows in, messages out: everything checked and rendered in one transaction.
    Also the ids that are not drip steps (newsletter copies among them, each loader takes its
    own kind)."""
    with transaction(runtime.settings.database_url) as session:
        rows = send_batch.load_due(session, delivery_ids)  # the drip steps among them
        suppressed = send_batch.suppressed_addresses(session, {due.email for due in rows})
        campaigns: dict[str, Campaign | str] = {}  # one catalog look-up (two stats) per batch
        next_due: dict[tuple[str, int, str | None, datetime], drip_policy.NextStep] = {}
        segment_of: dict[tuple[str, tuple[tuple[str, type, Any], ...]], Segment] = {}
        prepared: list[PreparedSend] = []
        stopped = campaign_states.stopped_among(session.connection(), [due.id for due in rows])
        tags: dict[int, set[str]] | None = None  # read once, when a campaign's exit goal names tags
        for due in rows:
            if due.id in stopped:  # paused: back to the queue untouched; cancelled: never sent
                delivery, enrollment, _ = _rows_of(session, due)
                if stopped[due.id] == campaign_states.PAUSED:
                    _hold(delivery)
                    outcome.postponed += 1
                else:
                    _finish(delivery, "skipped", campaign_states.CANCEL_REASON)
                    _end(enrollment, "cancelled", campaign_states.CANCEL_REASON, now)
                    outcome.skipped += 1
                continue
            if due.campaign_id not in campaigns:
                try:
                    campaigns[due.campaign_id] = runtime.catalog.get(due.campaign_id)
                except (NotFound, CadenceError) as exc:
                    campaigns[due.campaign_id] = str(exc)
                    log.error("campaign %s is held, file missing/broken: %s", due.campaign_id, exc, extra=_ids_of(due))
            campaign = campaigns[due.campaign_id]
            if isinstance(campaign, str):
                # A missing or broken campaign file HOLDS its deliveries (issue 13): they stay
                # queued, not attempted, until the file is back; the tick says so every time.
                _hold(_rows_of(session, due)[0])
                outcome.postponed += 1
                continue
            if campaign.exit_goal is not None and campaign.exit_goal.tags and tags is None:
                tags = send_batch.tags_of(session, [d.subscriber_id for d in rows])
            reason = _skip_reason(due, campaign, suppressed, (tags or {}).get(due.subscriber_id, set()), now)
            if reason:
                delivery, enrollment, _ = _rows_of(session, due)
                if reason == drip_policy.GOAL_REACHED:
                    send_batch.record_goal_reached(session, due, campaign.steps[due.step_index].id, now)
                _finish(delivery, "skipped", reason)
                state, end_reason = drip_policy.enrollment_end_after_skip(due.step_index, len(campaign.steps), reason)
                _end(enrollment, state, end_reason, now)
                outcome.skipped += 1
                continue
            if due.id in abandoned:  # a poison row: its worker stopped on it max_attempts times
                log.error("delivery %s given up: its worker kept stopping", due.id, extra=_ids_of(due))
                delivery, enrollment, subscriber = _rows_of(session, due)
                _finish(delivery, "failed", drip_policy.worker_stops_error(abandoned[due.id]))
                _skip_step(enrollment, subscriber, campaign, due.step_index, now)
                outcome.failed += 1
                continue
            later = _postpone_until(due, campaign, now)
            if later is not None:
                delivery, _, _ = _rows_of(session, due)
                _requeue(delivery, later, "postponed: paused or outside the send window", count_attempt=False)
                outcome.postponed += 1
                continue
            try:
                prepared.append(_prepare(runtime, session, due, campaign, now, next_due, segment_of))
            except CadenceError as exc:  # a template or an address broke after validation
                log.error("delivery %s cannot be built: %s", due.id, exc, extra=_ids_of(due))
                delivery, enrollment, subscriber = _rows_of(session, due)
                _finish(delivery, "failed", f"render: {exc}")
                _skip_step(enrollment, subscriber, campaign, due.step_index, now)
                outcome.failed += 1
        drip = {due.id for due in rows}
        others = [i for i in delivery_ids if i not in drip]
        poison = [i for i in others if i in abandoned]  # no enrollment to move on: failed
        for i in poison:
            queries.give_up(session.connection(), [i], token, drip_policy.worker_stops_error(abandoned[i]))
            outcome.failed += 1
        others = [i for i in others if i not in abandoned]
        if others:  # not drip steps: transactional emails (issue 12) or newsletter copies
            prepared += prepare_transactional(runtime, session, others, now, outcome)
    return prepared, others


def _ids_of(due: _Due) -> dict[str, Any]:
    """The ids a structured log line carries (cadence.monitoring.logs); never the address."""
    return {"delivery_id": due.id, "campaign_id": due.campaign_id, "subscriber_id": due.subscriber_id}


_rows_of = send_batch.rows_of


def _send_prepared(runtime: Runtime, prepared: list[PreparedSend], now: datetime, outcome: SendOutcome) -> None:
    """Send in groups (see ``GROUP_SECONDS``), recording each group's results as it goes. The
    ledger writes survive a lost database connection while the lease holds (batch_ledger.py)."""
    settings = runtime.settings
    if not prepared:
        return
    token = prepared[0].lease_token  # one claim leased the whole batch
    step = max(1, settings.commit_every)
    recheck_at = wall_now() + RECHECK_EVERY
    ledger = BatchLedger(
        engine_for(settings.database_url),
        [p.delivery_id for p in prepared],
        token,
        lease=timedelta(seconds=settings.lease_seconds),
        now=now,
        max_attempts=settings.max_attempts,
    )
    # One connection for the whole batch: a pool checkout (and its pre-ping) per group cost as
    # much as the UPDATEs themselves.
    with ledger:
        start = 0
        # Rows of `prepared` from `handed` on were never handed to the transport: what an
        # unexpected error of our code lets go of at once. A group handed over but not recorded
        # stays leased (the crash window: at most one group repeats, with the same Message-ID).
        handed = 0
        # Emails our code raised on alone (a bug, a signer fault): left out of the batch at once,
        # let go when it ends, one log line per fault (a signer fault hits every email).
        crashed_all: list[tuple[PreparedSend, Exception]] = []
        try:
            state_check_at = wall_now() + STATE_CHECK_EVERY
            while start < len(prepared):
                if wall_now() >= state_check_at:
                    # Paused or cancelled while this batch runs: stop within a second (issue 13).
                    remaining = [p.delivery_id for p in prepared[start:]]
                    released, skipped = ledger.write(
                        partial(campaign_states.halt_stopped, delivery_ids=remaining, token=token, now=now)
                    )
                    outcome.postponed += len(released)
                    outcome.skipped += len(skipped)
                    halted = released | skipped
                    if halted:
                        prepared = prepared[:start] + [p for p in prepared[start:] if p.delivery_id not in halted]
                    state_check_at = wall_now() + STATE_CHECK_EVERY
                if wall_now() >= recheck_at:
                    # A long batch (a slow server, a rate limit): honour unsubscribes, complaints and
                    # exits that arrived since the batch was prepared, before sending on.
                    gone = ledger.write(partial(queries.no_longer_sendable, prepared=prepared[start:], token=token))
                    outcome.skipped += len(gone)
                    prepared = prepared[:start] + [p for p in prepared[start:] if p.delivery_id not in gone]
                    recheck_at = wall_now() + RECHECK_EVERY
                size = _Pace.group_size(step)
                group = prepared[start : start + size]
                if not group:
                    break
                built, messages, broken, crashed = _compose_group(group)
                if crashed:
                    # The rest of the group and batch goes on without them.
                    crashed_all += crashed
                    ids = {p.delivery_id for p, _ in crashed}
                    prepared = prepared[:start] + [p for p in prepared[start:] if p.delivery_id not in ids]
                    size = len(group) - len(crashed)
                handed = start + size
                started = time.monotonic()
                try:
                    results = (
                        runtime.transport.send_many(messages, on_refused=ledger.refusal_hook(built)) if built else []
                    )
                except (TransportError, ConfigError, OSError) as exc:
                    # Nothing of this group went out (the server is unreachable, the transport is
                    # misconfigured): put the rest of the batch back without counting an attempt, so
                    # an outage never uses up retries; a config error is logged by the task.
                    unsent = [p.delivery_id for p in prepared[start:]]
                    handed = len(prepared)  # dealt with here
                    ledger.write(
                        partial(
                            queries.requeue_unsent,
                            ids=unsent,
                            not_before=drip_policy.outage_retry_at(now),
                            error=str(exc),
                            token=token,
                        )
                    )
                    outcome.retrying += len(prepared) - start
                    if isinstance(exc, TransientSendError):
                        log.warning("transport unavailable, %d deliveries retry later: %s", len(prepared) - start, exc)
                        _let_go_crashed(runtime, crashed_all, outcome, token, now, ledger)
                        return
                    raise
                if built:
                    _Pace.observe(time.monotonic() - started, len(built))
                    metrics.observe_send(time.monotonic() - started, len(built), settings.email_url)
                outcome.add(ledger.record([*built, *(p for p, _ in broken)], [*results, *(r for _, r in broken)]))
                start += size
                handed = start
        except Exception as exc:
            if not _ours(exc):
                raise
            _release(runtime, [p.delivery_id for p in prepared[handed:]], exc, outcome, token, now, ledger=ledger)
        _let_go_crashed(runtime, crashed_all, outcome, token, now, ledger)


def _let_go_crashed(
    runtime: Runtime,
    crashed: Sequence[tuple[PreparedSend, Exception]],
    outcome: SendOutcome,
    token: str,
    now: datetime,
    ledger: BatchLedger,
) -> None:
    """Let go of the emails our code raised on alone, one ``_release`` (one log line) per fault."""
    by_fault: dict[str, tuple[Exception, list[int]]] = {}
    for prepared, error in crashed:
        by_fault.setdefault(f"{type(error).__name__}: {error}", (error, []))[1].append(prepared.delivery_id)
    for error, ids in by_fault.values():
        _release(runtime, ids, error, outcome, token, now, ledger=ledger)


def _compose_group(
    group: Sequence[PreparedSend],
) -> tuple[
    list[PreparedSend], list[Composed], list[tuple[PreparedSend, SendResult]], list[tuple[PreparedSend, Exception]]
]:
    """Build the group's emails: the ones built with their messages; the ones that could not
    be (a template or an address that broke after validation), each with its failed result:
    that step is lost and the series goes on (drip_policy.series_goes_on_after_failure); and
    the ones on which our own code raised something else (a bug, a DKIM signer fault), each
    with its exception: tried again, given up after ``max_attempts`` (queries.abandoned_among)."""
    built: list[PreparedSend] = []
    messages: list[Composed] = []
    broken: list[tuple[PreparedSend, SendResult]] = []
    crashed: list[tuple[PreparedSend, Exception]] = []
    for prepared in group:
        try:
            messages.append(prepared.compose())
        except Exception as unexpected:
            if not isinstance(unexpected, CadenceError):
                if not _ours(unexpected):
                    raise
                crashed.append((prepared, unexpected))
                continue
            exc = unexpected
            log.error(
                "delivery %s cannot be built: %s",
                prepared.delivery_id,
                exc,
                extra={"delivery_id": prepared.delivery_id},
            )
            broken.append((prepared, SendResult("failed", detail=f"render: {exc}")))
            continue
        built.append(prepared)
    return built, messages, broken, crashed


def _skip_reason(due: _Due, campaign: Campaign, suppressed: set[str], tags: set[str], now: datetime) -> str:
    """Why `due` must not be sent at all (`suppressed`: the batch's suppressed addresses;
    `tags`: the subscriber's, read only when the campaign's exit goal names tags)."""
    tz = subscriber_zone(due.timezone, campaign)
    goal = drip_policy.exit_goal_reached(campaign.exit_goal, due.attributes, tags, now.astimezone(tz).date())
    return drip_policy.skip_reason(
        subscriber_status=due.status,
        suppressed=due.email in suppressed,
        enrollment_state=due.enrollment_state,
        step_index=due.step_index,
        step_count=len(campaign.steps),
        goal_reached=goal,
    )


def postponed_until(runtime: Runtime, delivery_ids: Sequence[int], now: datetime) -> list[datetime]:
    """When each of these drip deliveries will go out, for those the send path, run at `now`,
    will postpone instead of sending (outside the send window, a subscriber's pause). A read:
    what ``cadence tick`` says of the emails it hands out (cold trial: "handed to the workers to
    send now" of emails the workers then kept for the next window). A campaign that cannot be
    loaded is the tick's "held" line, not counted here."""
    with transaction(runtime.settings.database_url) as session:
        rows = send_batch.load_due(session, delivery_ids)
    later = []
    for due in rows:
        try:
            campaign = runtime.catalog.get(due.campaign_id)
        except CadenceError:
            continue
        when = _postpone_until(due, campaign, now)
        if when is not None:
            later.append(when)
    return later


def _postpone_until(due: _Due, campaign: Campaign, now: datetime) -> datetime | None:
    """When `due` must wait instead of going out now (drip_policy.postpone_until), or None."""
    return drip_policy.postpone_until(
        now=now,
        due_at=due.due_at,
        paused_until=due.paused_until,
        window=campaign.send_window,
        tz=subscriber_zone(due.timezone, campaign),
    )


def _prepare(
    runtime: Runtime,
    session: Session,
    due: _Due,
    campaign: Campaign,
    now: datetime,
    next_due: dict[tuple[str, int, str | None, datetime], drip_policy.NextStep],
    segment_of: dict[tuple[str, tuple[tuple[str, type, Any], ...]], Segment],
) -> PreparedSend:
    """What this delivery will send and what follows it. The email itself is rendered and built
    when its group is sent (``PreparedSend.compose``); what needs the database (the tracked
    links' ids) or may refuse the whole variant (compiling it) is done here."""
    settings = runtime.settings
    step = campaign.steps[due.step_index]
    segment = _segment(campaign, due.attributes, now, segment_of)
    variant = runtime.renderer.variant(campaign, step, segment)
    link_url = _click_tracker(runtime, session, variant.links, due.id) if campaign.tracking.clicks else None
    domain = campaign.sender_email.rsplit("@", 1)[1]
    message_id = make_message_id(due.id, settings.secret_key, domain)
    # If this one is sent now, the next is due then. The same for everyone of the batch in one
    # zone who enrolled at the same moment (the usual bulk enrollment): the policy runs once per
    # such group, not per email.
    key = (campaign.id, due.step_index, due.timezone, due.enrolled_at)
    following = next_due.get(key)
    if following is None:
        tz = subscriber_zone(due.timezone, campaign)
        following = drip_policy.next_step_after(
            campaign, due.step_index, enrolled_at=due.enrolled_at, sent_at=now, tz=tz
        )
        next_due[key] = following
    return PreparedSend(
        delivery_id=due.id,
        lease_token=due.lease_token or "",
        message_id=message_id,
        compose=partial(_compose, runtime, due, campaign, variant, link_url, message_id, now),
        step_id=step.id,
        segment_id=segment.id,
        content_hash=variant.content_hash,
        attempts=due.attempts,
        enrollment_id=due.enrollment_id,
        subscriber_email=due.email,
        next_step=following.index,
        next_send_at=following.due_at,
    )


def _compose(
    runtime: Runtime,
    due: _Due,
    campaign: Campaign,
    variant: CompiledVariant,
    link_url: Callable[[int, str], str] | None,
    message_id: str,
    now: datetime,
) -> Composed:
    """Render and build one drip email (called just before its group is sent)."""
    settings = runtime.settings
    base = settings.base_url
    unsubscribe_url = f"{base}/u/{make_token(settings.secret_key, 'unsubscribe', [due.subscriber_id, due.id])}"
    links = {
        "unsubscribe": unsubscribe_url,
        "preferences": f"{base}/p/{make_token(settings.secret_key, 'preferences', due.subscriber_id)}",
        "web_view": f"{base}/v/{make_token(settings.secret_key, 'webview', due.id)}",
    }
    rendered = render_email(
        variant,
        subscriber={
            "first_name": due.first_name,
            "email": due.email,
            "attributes": due.attributes,
        },
        links=links,
        link_url=link_url,
    )
    html = rendered.html
    if campaign.tracking.opens:
        pixel = f"{base}/o/{due.id}/{link_signature(settings.secret_key, 'open', due.id)}.gif"
        html = _add_open_pixel(html, pixel)
    # rspamd's URI_COUNT_ODD: an image (the pixel) has no counterpart in the text part unless we
    # give it one (core/uri_parity.py). The count is the same for every subscriber of a variant.
    count = variant_uri_count((variant.content_hash, campaign.tracking.opens), html, rendered.text)
    text = balance_uri_count(html, rendered.text, links["web_view"], count=count)
    domain = campaign.sender_email.rsplit("@", 1)[1]
    message = OutgoingMessage(
        sender=Address(campaign.sender_email, campaign.sender_name),
        to=Address(due.email, due.first_name),
        subject=rendered.subject,
        html=html,
        text=text,
        message_id=message_id,
        reply_to=campaign.reply_to,
        list_id=f"{campaign.name} <{campaign.id}.{domain}>",
        list_unsubscribe_url=unsubscribe_url,
        list_unsubscribe_mailto=f"mailto:unsubscribe@{domain}?subject=unsubscribe",
        metadata={"delivery_id": str(due.id), "campaign": campaign.id, "step": campaign.steps[due.step_index].id},
    )
    mime = build_mime(message, date=now, signer=runtime.signer) if runtime.transport.needs_mime else b""
    return message, mime


def _segment(
    campaign: Campaign,
    attributes: dict[str, Any],
    now: datetime,
    seen: dict[tuple[str, tuple[tuple[str, type, Any], ...]], Segment],
) -> Segment:
    """choose_segment, decided once per batch for subscribers with the same attributes.

    The choice depends only on the attributes and the send date (fixed for a batch), and a list
    that answered one signup form shares a handful of answer combinations: one decision per
    combination instead of one per email (~15 µs each, issue 15). Attributes holding lists or
    other unhashable values are decided every time.
    """
    try:
        # The type too: 1, 1.0 and True are equal keys, and a rule may tell them apart.
        key = (campaign.id, tuple((name, type(value), value) for name, value in sorted(attributes.items())))
        segment = seen.get(key)
    except TypeError:  # a list or dict among the values
        return choose_segment(campaign.segments, attributes, now.date())
    if segment is None:
        segment = seen[key] = choose_segment(campaign.segments, attributes, now.date())
    return segment


def _click_tracker(
    runtime: Runtime, session: Session, urls: Sequence[str], delivery_id: int
) -> Callable[[int, str], str]:
    link_ids = ensure_links(session, urls)
    base, key = runtime.settings.base_url, runtime.settings.secret_key

    def link_url(index: int, url: str) -> str:
        link_id = link_ids[url]
        return f"{base}/c/{delivery_id}/{link_id}/{link_signature(key, 'click', delivery_id, link_id)}"

    return link_url


_LINK_CACHE: dict[str, int] = {}


def ensure_links(session: Session, urls: Sequence[str]) -> dict[str, int]:
    """Ids of stored click-tracking destinations, creating rows for new URLs (cached per process)."""
    missing = [u for u in urls if u not in _LINK_CACHE]
    if missing:
        _LINK_CACHE.update(queries.store_links(session, missing))
    return {u: _LINK_CACHE[u] for u in urls}




def _add_open_pixel(html: str, url: str) -> str:
    tag = f'<img src="{url}" width="1" height="1" alt="" style="display:block;border:0;height:1px;width:1px">'
    index = html.rfind("</body>")
    return html[:index] + tag + html[index:] if index != -1 else html + tag


def _finish(delivery: Delivery, state: str, error: str) -> None:
    delivery.state = state
    delivery.last_error = error[:2000]
    delivery.lease_expires_at = None


def _end(enrollment: Enrollment, state: str, reason: str, now: datetime) -> None:
    if enrollment.state == "active":
        enrollment.state, enrollment.next_send_at = state, None
        enrollment.ended_at, enrollment.end_reason = now, reason[:100]


def _skip_step(
    enrollment: Enrollment, subscriber: Subscriber, campaign: Campaign, step_index: int, now: datetime
) -> None:
    """This step cannot be sent; go on with the next one (or complete the series)."""
    if enrollment.state != "active":
        return
    tz = subscriber_zone(subscriber.timezone, campaign)
    following = drip_policy.next_step_after(
        campaign, step_index, enrolled_at=enrollment.enrolled_at, sent_at=now, tz=tz
    )
    enrollment.next_step = following.index
    if following.due_at is None:
        _end(enrollment, "completed", "all steps done (the last one failed)", now)
        return
    enrollment.next_send_at = following.due_at


def _hold(delivery: Delivery) -> None:
    """Give a leased row back to the queue as it was, not attempted (a paused campaign, or one
    whose file is missing): the claim's attempt is given back and its due time kept."""
    delivery.state = "queued"
    delivery.enqueued_at = delivery.lease_expires_at = delivery.lease_token = None
    delivery.attempts = max(0, delivery.attempts - 1)


def _requeue(delivery: Delivery, not_before: datetime, error: str, *, count_attempt: bool = True) -> None:
    delivery.state = "queued"
    delivery.not_before = not_before
    delivery.enqueued_at = None
    delivery.lease_expires_at = None
    delivery.last_error = error[:2000]
    if not count_attempt:
        delivery.attempts = max(0, delivery.attempts - 1)
