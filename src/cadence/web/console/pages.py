"""The console's pages for every role: dashboard, subscribers (search, profile and its actions:
tags, unsubscribe, suppress, unsuppress, export, erase), suppressions and bounces, audit log.
Each handler is one call of an operation (operations/console_reads.py for the pages,
operations/subscriber_tools.py and subscriber_export.py for the actions, each audit-logged as
the logged-in user) and a render; the role each needs is its Access dependency (auth.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from cadence.core.campaign import Campaign
from cadence.errors import CampaignError, InputError, NotFound
from cadence.operations import console_reads, subscriber_export, subscriber_tools
from cadence.operations.exit_goals import goal_campaigns
from cadence.operations.staff_accounts import StaffIdentity
from cadence.operations.work import Session
from cadence.web.console.auth import Admin, Editor, Viewer, form_field
from cadence.web.console.render import done_redirect, done_text, page
from cadence.web.state import State, WebState

router = APIRouter(prefix="/admin", include_in_schema=False)

# Past the database's integer range an id or an OFFSET is an OverflowError from the driver: a
# 500 (hostile review). Bounded here, it is the not-found page like any other unknown id.
MAX_ID = 2**63 - 1
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID)]
PageNumber = Annotated[int, Query(le=1_000_000)]


@router.get("")
def dashboard(request: Request, state: State, me: Viewer) -> Response:
    board = console_reads.dashboard(state.session, state.runtime.catalog, state.now())
    return page(request, "dashboard.html", {"board": board}, me=me)


@router.get("/subscribers")
def subscribers(
    request: Request,
    state: State,
    me: Viewer,
    q: Annotated[str, Query(max_length=1000)] = "",
    status: Annotated[str, Query(max_length=40)] = "",
    tag: Annotated[str, Query(max_length=200)] = "",
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    done: str = "",
    sig: str = "",
) -> Response:
    filters = console_reads.SearchFilters(status, tag)
    context: dict[str, Any] = {"done": done_text(me, done, sig), "statuses": subscriber_tools.STATUSES}
    try:
        with state.session() as session:
            found = console_reads.search_subscribers(session, q, filters=filters, before=before)
    except InputError as exc:
        empty = console_reads.SubscriberPage(q.strip()[:200], filters, 0, [], None, True)
        context |= {"found": empty, "error": str(exc)[:1].upper() + str(exc)[1:]}  # names the filter
        return page(request, "subscribers.html", context, me=me, status=400)
    return page(request, "subscribers.html", {**context, "found": found}, me=me)


def _campaign_or_none(state: WebState, name: str) -> Campaign | None:
    """The campaign's definition for the timeline's "will be skipped" (its exit goal), None when
    its file is gone or broken (the send path holds such deliveries)."""
    try:
        return state.runtime.catalog.get(name)
    except (NotFound, CampaignError):
        return None


def _profile(
    request: Request,
    state: WebState,
    me: StaffIdentity,
    subscriber_id: SubscriberId,
    error: str = "",
    status: int = 200,
    done: str = "",
) -> Response:
    try:
        with state.session() as session:
            profile = console_reads.subscriber_profile(
                session,
                subscriber_id,
                campaign_named=lambda name: _campaign_or_none(state, name),
                suppression=lambda email: subscriber_tools.suppression_reason(
                    session, email, keys=state.suppression_keys
                ),
            )
            suppressed = profile.suppressed
    except NotFound:
        return page(
            request,
            "message.html",
            {"title": "No such subscriber", "message": "They may have been erased."},
            me=me,
            status=404,
        )
    context = {"profile": profile, "error": error, "done": done, "suppressed": suppressed}
    return page(request, "subscriber.html", context, me=me, status=status)


@router.get("/subscribers/{subscriber_id}")
def subscriber(
    request: Request, state: State, me: Viewer, subscriber_id: SubscriberId, done: str = "", sig: str = ""
) -> Response:
    return _profile(request, state, me, subscriber_id, done=done_text(me, done, sig))


def _email_of(state: WebState, subscriber_id: SubscriberId) -> str:
    """The address the subscriber tools take (NotFound once erased)."""
    with state.session() as session:
        return console_reads.subscriber_profile(session, subscriber_id, limit=0).subscriber.email


def _field_error(exc: InputError) -> str:
    text = str(exc).split(": ", 1)[-1]
    return text[:1].upper() + text[1:]


def _run(
    request: Request, state: WebState, me: StaffIdentity, subscriber_id: int, action: Callable[[Session, str], str]
) -> Response:
    """Run one subscriber tool on this subscriber's address; back to the profile saying what
    happened, or the profile with the error (nothing changed: one transaction)."""
    try:
        email = _email_of(state, subscriber_id)
        with state.session() as session:
            done = action(session, email)
    except NotFound:
        return _profile(request, state, me, subscriber_id)
    except InputError as exc:
        return _profile(request, state, me, subscriber_id, _field_error(exc), status=400)
    return done_redirect(f"/admin/subscribers/{subscriber_id}", me, done)


@router.post("/subscribers/{subscriber_id}/tags")
def add_tag(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    tag: Annotated[str, form_field("tag", 200)],
) -> Response:
    def run(session: Session, email: str) -> str:
        change = subscriber_tools.tag_subscribers(
            session,
            emails=[email],
            add=[tag],
            today=state.now().date(),
            actor=me.actor,
            now=state.now(),
            goals=goal_campaigns(state.runtime.catalog),
        )
        ended = f" Exit goal reached: {change.goals_reached} drip(s) ended." if change.goals_reached else ""
        return f"Tag {tag.strip().lower()} added.{ended}"

    return _run(request, state, me, subscriber_id, run)


@router.post("/subscribers/{subscriber_id}/tags/remove")
def remove_tag(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    tag: Annotated[str, form_field("tag", 200)],
) -> Response:
    def run(session: Session, email: str) -> str:
        subscriber_tools.tag_subscribers(
            session, emails=[email], remove=[tag], today=state.now().date(), actor=me.actor, now=state.now()
        )
        return f"Tag {tag.strip().lower()} removed."

    return _run(request, state, me, subscriber_id, run)


@router.post("/subscribers/{subscriber_id}/unsubscribe")
def unsubscribe(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    reason: Annotated[str, form_field("reason", 200)],
) -> Response:
    def run(session: Session, email: str) -> str:
        note = subscriber_tools.unsubscribe_subscriber(
            session, email, reason=reason or "asked staff", actor=me.actor, now=state.now()
        )
        if note:
            return note.capitalize() + "."
        return "Unsubscribed: their campaigns ended and no newsletter goes to them."

    return _run(request, state, me, subscriber_id, run)


@router.post("/subscribers/{subscriber_id}/suppress")
def suppress(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    reason: Annotated[str, form_field("reason", 2000)],
) -> Response:
    def run(session: Session, email: str) -> str:
        change = subscriber_tools.suppress_subscriber(session, email, reason=reason, actor=me.actor, now=state.now())
        return change.note.capitalize() + "." if change.note else "Suppressed: no more emails go to this address."

    return _run(request, state, me, subscriber_id, run)


@router.post("/subscribers/{subscriber_id}/unsuppress")
def unsuppress(request: Request, state: State, me: Editor, subscriber_id: SubscriberId) -> Response:
    def run(session: Session, email: str) -> str:
        change = subscriber_tools.unsuppress_subscriber(
            session, email, keys=state.suppression_keys, actor=me.actor, now=state.now()
        )
        return "Suppression lifted" + (f": {change.note}." if change.note else ".")

    return _run(request, state, me, subscriber_id, run)


@router.post("/subscribers/{subscriber_id}/export")
def export(request: Request, state: State, me: Editor, subscriber_id: SubscriberId) -> Response:
    """This subscriber's row as CSV (subscriber_export: the columns of `cadence subscribers
    export`), audit-logged as an export of this address."""
    try:
        email = _email_of(state, subscriber_id)
    except NotFound:
        return _profile(request, state, me, subscriber_id)
    out = io.StringIO()
    with state.session() as session:
        subscriber_export.export_subscribers(
            session,
            subscriber_tools.SubscriberFilter(email=email),
            state.now().date(),
            out,
            fmt="csv",
            actor=me.actor,
            now=state.now(),
        )
    headers = {"Content-Disposition": f'attachment; filename="subscriber-{subscriber_id}.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@router.post("/subscribers/{subscriber_id}/erase")
def erase(
    request: Request,
    state: State,
    me: Admin,
    subscriber_id: SubscriberId,
    confirm: Annotated[str, form_field("confirm", 400)],
) -> Response:
    """Erase for good (GDPR Art. 17), as the person's own erase link does. The address must be
    typed: this cannot be undone."""
    try:
        email = _email_of(state, subscriber_id)
    except NotFound:
        return _profile(request, state, me, subscriber_id)
    if confirm.strip().lower() != email.lower():
        error = f"To erase, type the address exactly: {email}. Nothing was erased."
        return _profile(request, state, me, subscriber_id, error, status=400)
    with state.session() as session:
        subscriber_tools.erase_subscriber(session, email, keys=state.suppression_keys, actor=me.actor, now=state.now())
    subscriber_tools.after_erase(state.settings.database_url)
    return done_redirect("/admin/subscribers", me, f"Subscriber {subscriber_id} was erased.")


@router.get("/audit")
def audit(request: Request, state: State, me: Viewer, actor: str = "", page_number: PageNumber = 1) -> Response:
    with state.session() as session:
        log = console_reads.audit_log(session, page=page_number, actor=actor)
    return page(request, "audit.html", {"log": log}, me=me)


@router.get("/suppressions")
def suppressions(request: Request, state: State, me: Viewer) -> Response:
    with state.session() as session:
        found = console_reads.suppressions_and_bounces(session)
    return page(request, "suppressions.html", {"found": found}, me=me)
