"""The staff API under ``/api/admin`` (issue 13 item 9; ``/api/staff`` stays as an undocumented
alias so existing scripts keep working): the staff's subscriber tools, results and audit log
for scripts and other tools, with ``Authorization: Bearer <token>`` (``cadence tokens add``).
The sending routes (campaigns, newsletters) are in :mod:`cadence.web.staff_api_sending`;
``cadence.web.app`` mounts both routers under both prefixes.

Every route names the scope it needs and the server checks it (``read`` < ``write`` < ``admin``;
cadence.operations.staff_access): 401 without a valid token (with ``WWW-Authenticate: Bearer``,
RFC 6750 §3), 403 when the token's scope is too small, 429 beyond
``CADENCE_STAFF_API_PER_MINUTE`` requests per token per minute. Failed authentications are
limited per client IP as well, so tokens cannot be guessed at speed (they cannot be guessed
anyway: 256 random bits). Each route calls the same operation as the CLI; actions are audited
as ``token:<name>``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import date
from typing import Annotated, Any, Literal, TextIO, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Scope

from cadence.core.campaign import Campaign
from cadence.errors import CampaignError, InputError, NotFound
from cadence.files.catalog import CampaignCatalog
from cadence.operations import results, staff_access, subscriber_export, subscriber_tools
from cadence.operations.exit_goals import goal_campaigns
from cadence.operations.staff_access import TokenInfo
from cadence.web.ratelimit import Limit, RateLimited
from cadence.web.security import client_ip, rate_limit_key
from cadence.web.state import State, WebState, get_state

FAILED_AUTH_PER_IP = Limit(20, 60)


class ErrorOut(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON."},
    401: {"model": ErrorOut, "description": "No token, or not a valid one."},
    403: {"model": ErrorOut, "description": "The token's scope does not allow this."},
    404: {"model": ErrorOut, "description": "No such subscriber, campaign or newsletter."},
    413: {"model": ErrorOut, "description": "The body is too large."},
    429: {"model": ErrorOut, "description": "Too many requests."},
}
router = APIRouter(tags=["staff"], responses=ERRORS)
PREFIXES = (("/api/admin", True), ("/api/staff", False))  # (prefix, in /openapi.json)


def _unauthorised(state: WebState, request: Request, detail: str) -> HTTPException:
    key = rate_limit_key(client_ip(request), state.settings.rate_limit_ipv6_prefix)
    wait = state.limiter.hit(f"staff-auth-failed:{key}", FAILED_AUTH_PER_IP)
    if wait:
        raise RateLimited(wait)
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="cadence staff"'})


# Declares the scheme in /openapi.json; the checks are ours (auto_error=False: our 401 body).
_bearer = HTTPBearer(auto_error=False, scheme_name="staff token", description="cadence tokens add NAME --scope ...")


def needs(scope: Literal["read", "write", "admin"]) -> Callable[..., TokenInfo]:
    """A dependency: the caller's token, if it is valid and its scope allows `scope`."""

    def dependency(
        request: Request, state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> TokenInfo:
        if credentials is None or not credentials.credentials.strip():
            raise _unauthorised(state, request, "send Authorization: Bearer <token> (cadence tokens add)")
        with state.session() as session:
            token = staff_access.authenticate(session, credentials.credentials.strip(), state.now())
        if token is None:
            raise _unauthorised(state, request, "this token is not valid (revoked, or never made)")
        wait = state.limiter.hit(f"staff-token:{token.id}", Limit(state.settings.staff_api_per_minute, 60))
        if wait:
            raise RateLimited(wait)
        if not staff_access.allows(token.scope, scope):
            raise HTTPException(403, f"this token's scope is {token.scope}; this needs {scope}")
        return token

    return dependency


async def refuse_without_token(app: Any, scope: Scope) -> Response | None:
    """The body guard's gate for the staff API (web/body_guard.py): a write (a request with a
    body) without a valid token is answered 401 (or 429, as the routes do) from its headers
    alone, so an anonymous client's 2 MiB of JSON is never read, let alone parsed. A valid
    token goes on to the route, whose own check (`needs`) also decides the scope."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return None
    request = Request({**scope, "app": app})
    state: WebState = app.state.cadence
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():

        def valid() -> bool:
            with state.session() as session:
                return staff_access.authenticate(session, credentials.strip(), state.now()) is not None

        if await run_in_threadpool(valid):
            return None
        detail = "this token is not valid (revoked, or never made)"
    else:
        detail = "send Authorization: Bearer <token> (cadence tokens add)"
    close = {"Connection": "close"}  # the body is not read: this connection cannot carry another request
    try:
        refused = _unauthorised(state, request, detail)
    except RateLimited as exc:
        return JSONResponse({"detail": str(exc)}, 429, headers={"Retry-After": str(exc.retry_after), **close})
    return JSONResponse({"detail": refused.detail}, refused.status_code, headers={**(refused.headers or {}), **close})


Reader = Annotated[TokenInfo, Depends(needs("read"))]
Writer = Annotated[TokenInfo, Depends(needs("write"))]
Admin = Annotated[TokenInfo, Depends(needs("admin"))]


def _not_found(exc: NotFound) -> HTTPException:
    return HTTPException(404, str(exc))


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: str | None = Field(default=None, max_length=320, description="Part of an address or first name")
    status: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)

    def wanted(self) -> subscriber_tools.SubscriberFilter:
        return subscriber_tools.SubscriberFilter(
            text=self.q or None,
            statuses=subscriber_tools.check_statuses(self.status),
            tags=tuple(subscriber_tools.check_tag(t) for t in self.tag),
        )


def _filters(
    q: Annotated[str | None, Query(max_length=320)] = None,
    status: Annotated[list[str] | None, Query()] = None,
    tag: Annotated[list[str] | None, Query()] = None,
) -> Filters:
    return Filters(q=q, status=status or [], tag=tag or [])


QueryFilters = Annotated[Filters, Depends(_filters)]


@router.get("/subscribers")
def search(
    token: Reader,
    state: State,
    filters: QueryFilters,
    limit: Annotated[int, Query(ge=1, le=subscriber_tools.MAX_PAGE)] = 50,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,  # past it: a driver OverflowError
) -> dict[str, Any]:
    """Subscribers whose address or first name contains ``q``, with the given statuses and
    tags; pages of ``limit``, the next one from ``next_after``."""
    with state.session() as session:
        page = subscriber_tools.search_subscribers(
            session, filters.wanted(), state.now().date(), limit=limit, after=after
        )
    return asdict(page)


@router.get("/subscribers/export")
def export(
    token: Reader,
    request: Request,
    filters: QueryFilters,
    format: Annotated[Literal["csv", "json"], Query()] = "csv",
) -> StreamingResponse:
    """Every subscriber the filters find, as CSV or JSON lines. Written to a temporary file that
    spills to disk past 1 MB, then streamed: memory stays flat whatever the list's size."""
    state = get_state(request)
    spool = tempfile.SpooledTemporaryFile(max_size=1 << 20, mode="w+", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        with state.session() as session:
            subscriber_export.export_subscribers(
                session,
                filters.wanted(),
                state.now().date(),
                cast(TextIO, spool),
                fmt=format,
                actor=token.actor,
                now=state.now(),
            )
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    def chunks() -> Iterator[str]:
        with spool:
            while block := spool.read(64 * 1024):
                yield block

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    disposition = f'attachment; filename="subscribers.{"csv" if format == "csv" else "jsonl"}"'
    return StreamingResponse(chunks(), media_type=media, headers={"Content-Disposition": disposition})


@router.get("/subscribers/{email}")
def show(email: str, token: Reader, state: State) -> dict[str, Any]:
    """The subscriber's profile and the timeline of every email and event."""
    catalog = CampaignCatalog(state.settings.campaigns_dir, state.settings.templates_dir)

    def campaign_named(name: str) -> Campaign | None:
        try:
            return catalog.get(name)
        except (NotFound, CampaignError):
            return None

    try:
        with state.session() as session:
            profile = subscriber_tools.subscriber_profile(
                session,
                email,
                keys=state.suppression_keys,
                campaign_named=campaign_named,
                actor=token.actor,
                now=state.now(),
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    return asdict(profile)


class SuppressIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


@router.post("/subscribers/{email}/suppression")
def suppress(email: str, body: SuppressIn, token: Writer, state: State) -> dict[str, Any]:
    """Suppress the address (no more emails; its drips end). Idempotent."""
    try:
        with state.session() as session:
            change = subscriber_tools.suppress_subscriber(
                session, email, reason=body.reason, actor=token.actor, now=state.now()
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    return asdict(change)


@router.delete("/subscribers/{email}/suppression")
def unsuppress(email: str, token: Writer, state: State) -> dict[str, Any]:
    """Lift a staff, bounce or complaint suppression (never an erase's)."""
    try:
        with state.session() as session:
            change = subscriber_tools.unsuppress_subscriber(
                session, email, keys=state.suppression_keys, actor=token.actor, now=state.now()
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    return asdict(change)


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    emails: list[str] = Field(default_factory=list, max_length=1000)
    q: str | None = Field(default=None, max_length=320)
    status: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)
    add: list[str] = Field(default_factory=list, max_length=50)
    remove: list[str] = Field(default_factory=list, max_length=50)


@router.post("/subscribers/tags")
def tag(body: TagsIn, token: Writer, state: State) -> dict[str, Any]:
    """Add and remove tags on the listed addresses, or on everyone the filters find."""
    by_filter = bool(body.q or body.status or body.tag)
    wanted = Filters(q=body.q, status=body.status, tag=body.tag).wanted() if by_filter else None
    try:
        with state.session() as session:
            change = subscriber_tools.tag_subscribers(
                session,
                emails=body.emails,
                wanted=wanted,
                today=state.now().date(),
                add=body.add,
                remove=body.remove,
                actor=token.actor,
                now=state.now(),
                goals=goal_campaigns(state.runtime.catalog) if body.add else (),
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    return asdict(change)


@router.delete("/subscribers/{email}")
def erase(email: str, token: Admin, state: State) -> dict[str, Any]:
    """Erase the subscriber for good (GDPR Art. 17); the address stays blocked."""
    try:
        with state.session() as session:
            erased = subscriber_tools.erase_subscriber(
                session, email, keys=state.suppression_keys, actor=token.actor, now=state.now()
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    subscriber_tools.after_erase(state.settings.database_url)
    return {"status": "erased", "id": erased}


@router.get("/report/{campaign}")
def report(
    # Bounded: the name becomes campaigns/<name>.yaml, and past NAME_MAX (255) that was an
    # OSError 500 (hostile review).
    campaign: Annotated[str, Path(max_length=200)],
    token: Reader,
    state: State,
    since: date | None = None,
    until: date | None = None,
    reasons: bool = False,
    daily: bool = False,
) -> dict[str, Any]:
    """Results per step × segment (a newsletter: per segment): sent, delivered, failed, unique
    opens (inflated by mail privacy proxies) and clicks with rates, unsubscribes, bounces,
    complaints, top links; with ``daily=true`` also the per-day series as ``daily``."""
    try:
        definition: Campaign | None = CampaignCatalog(state.settings.campaigns_dir, state.settings.templates_dir).get(
            campaign
        )
    except (NotFound, CampaignError):
        definition = None
    try:
        folded = results.catch_up(state.session)
        with state.session() as session:
            found = results.campaign_results(
                session,
                campaign,
                definition,
                state.now(),
                since=since,
                until=until,
                folded=folded,
                reasons=reasons,
                daily=daily,
            )
    except NotFound as exc:
        raise _not_found(exc) from None
    return found.document()


@router.get("/audit")
def audit(
    token: Reader,
    state: State,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    target: Annotated[str | None, Query(max_length=200)] = None,
) -> list[dict[str, Any]]:
    """Who did what, newest first."""
    with state.session() as session:
        return [asdict(e) for e in staff_access.audit_entries(session, limit=limit, target=target)]


__all__ = ["ERRORS", "PREFIXES", "ErrorOut", "InputError", "Reader", "Writer", "router"]
