"""The console's pages for every role: dashboard, subscribers (search, profile, tags),
suppressions and bounces, audit log.
Each handler is one call of an operation (operations/console_reads.py, console_tags.py) and a
render; the role each needs is its Access dependency (auth.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Query, Request
from starlette.responses import Response

from cadence.errors import InputError, NotFound
from cadence.operations import console_reads, console_tags
from cadence.web.console.auth import Editor, Viewer
from cadence.web.console.render import page, redirect
from cadence.web.state import State

router = APIRouter(prefix="/admin", include_in_schema=False)

# Past the database's integer range an id or an OFFSET is an OverflowError from the driver: a
# 500 (hostile review). Bounded here, it is the not-found page like any other unknown id.
MAX_ID = 2**63 - 1
SubscriberId = Annotated[int, Path(ge=1, le=MAX_ID)]
PageNumber = Annotated[int, Query(le=1_000_000)]


@router.get("")
def dashboard(request: Request, state: State, me: Viewer) -> Response:
    with state.session() as session:
        board = console_reads.dashboard(session, state.runtime.catalog, state.now())
    return page(request, "dashboard.html", {"board": board}, me=me)


@router.get("/subscribers")
def subscribers(request: Request, state: State, me: Viewer, q: str = "", page_number: PageNumber = 1) -> Response:
    with state.session() as session:
        found = console_reads.search_subscribers(session, q, page_number)
    return page(request, "subscribers.html", {"found": found}, me=me)


def _profile(
    request: Request, state: State, me: Viewer, subscriber_id: int, error: str = "", status: int = 200
) -> Response:
    try:
        with state.session() as session:
            profile = console_reads.subscriber_profile(session, subscriber_id)
    except NotFound:
        return page(
            request,
            "message.html",
            {"title": "No such subscriber", "message": "They may have been erased."},
            me=me,
            status=404,
        )
    return page(request, "subscriber.html", {"profile": profile, "error": error}, me=me, status=status)


@router.get("/subscribers/{subscriber_id}")
def subscriber(request: Request, state: State, me: Viewer, subscriber_id: SubscriberId) -> Response:
    return _profile(request, state, me, subscriber_id)


@router.post("/subscribers/{subscriber_id}/tags")
def add_tag(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    tag: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        with state.session() as session:
            console_tags.tag_subscriber(session, subscriber_id, tag, actor=me.actor, now=state.now())
    except NotFound:
        return _profile(request, state, me, subscriber_id)
    except InputError as exc:
        return _profile(request, state, me, subscriber_id, str(exc).split(": ", 1)[-1], status=400)
    return redirect(f"/admin/subscribers/{subscriber_id}")


@router.post("/subscribers/{subscriber_id}/tags/remove")
def remove_tag(
    request: Request,
    state: State,
    me: Editor,
    subscriber_id: SubscriberId,
    tag: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        with state.session() as session:
            console_tags.untag_subscriber(session, subscriber_id, tag, actor=me.actor, now=state.now())
    except InputError as exc:
        return _profile(request, state, me, subscriber_id, str(exc).split(": ", 1)[-1], status=400)
    return redirect(f"/admin/subscribers/{subscriber_id}")


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
