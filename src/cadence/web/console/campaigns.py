"""The console's campaign pages (issue 14): /admin/campaigns (drips and newsletters, with
schedule (newsletters), pause, resume, cancel and send test) and /admin/campaigns/<id> (results per step × segment,
top links, a funnel chart per step).

Each handler calls one operation: operations/console_campaigns.py for what the pages show,
operations/lifecycle.py (drips) or operations/newsletters.py for a state change or a
newsletter's schedule, and
operations/test_sends.py (a drip's test, "As this subscriber" included, as the CLI's
``--subscriber``) or newsletters.send_test for a test email. Every action is an editor's
POST with the session's CSRF token (auth.Access) and lands in the audit log as ``user:<email>``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from starlette.responses import HTMLResponse, Response

from cadence.errors import CadenceError, InputError, NotFound
from cadence.operations import console_campaigns, lifecycle, newsletter_drafts, newsletters
from cadence.operations.staff_accounts import StaffIdentity
from cadence.operations.test_sends import send_campaign_test
from cadence.operations.tracking import style_hashes
from cadence.web.console.auth import Editor, Viewer, form_field
from cadence.web.console.render import done_redirect, done_text, page
from cadence.web.state import State, WebState

router = APIRouter(prefix="/admin", include_in_schema=False)
# A campaign id becomes a file name (campaigns/<id>.yaml): longer than any file name may be, it
# is a 422, not an OSError (the staff API caps it the same way).
CampaignId = Annotated[str, Path(max_length=200)]
# The label of the test form's subscriber field, as the newsletter composer's: an error names it.
SUBSCRIBER_FIELD = "As this subscriber"


def _list_page(
    request: Request, state: WebState, me: StaffIdentity, *, done: str = "", error: str = "", status: int = 200
) -> Response:
    found = console_campaigns.campaign_list(state.settings)
    composed = {draft.id for draft in newsletter_drafts.list_drafts(state.settings)}  # written in the composer
    context = {"found": found, "composed": composed, "done": done, "error": error}
    return page(request, "campaigns.html", context, me=me, status=status)


def _message(exc: CadenceError) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:]


@router.get("/campaigns")
def campaigns(request: Request, state: State, me: Viewer, done: str = "", sig: str = "") -> Response:
    return _list_page(request, state, me, done=done_text(me, done, sig))


@router.get("/campaigns/{campaign_id}")
def campaign(
    request: Request, state: State, me: Viewer, campaign_id: CampaignId, done: str = "", sig: str = ""
) -> Response:
    return _campaign_page(request, state, me, campaign_id, done=done_text(me, done, sig))


def _campaign_page(
    request: Request,
    state: WebState,
    me: StaffIdentity,
    campaign_id: str,
    *,
    done: str = "",
    error: str = "",
    typed: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The campaign page; after a refused test send, with the error and the test form as typed
    (`typed`: to, step, segment, subscriber) so the person corrects it instead of starting over."""
    try:
        shown = console_campaigns.campaign_page(state.settings, state.runtime.catalog, campaign_id, state.now())
    except NotFound:
        missing = {"title": "No results yet", "message": f"Nothing has been sent for {campaign_id} yet."}
        return page(request, "message.html", missing, me=me, status=404)
    grid = console_campaigns.preview_grid(state.settings.campaigns_dir, state.runtime.renderer, campaign_id)
    context: dict[str, Any] = {
        "shown": shown,
        "campaign_id": campaign_id,
        "grid": grid,
        "done": done,
        "error": error,
        "typed": typed or {},
        "subscriber_field": SUBSCRIBER_FIELD,
    }
    return page(request, "campaign.html", context, me=me, status=status)


@router.get("/campaigns/{campaign_id}/preview/{step}/{segment_id}")
def preview(
    request: Request,
    state: State,
    me: Viewer,
    campaign_id: CampaignId,
    step: Annotated[int, Path(ge=1, le=10_000)],
    segment_id: Annotated[str, Path(max_length=200)],
) -> Response:
    """One email of the preview grid, for a frame of the campaign page. The frame is sandboxed
    (no scripts, an opaque origin: the email cannot read the console's cookies or pages), and
    this response carries a policy of its own besides: nothing but the email's own inline styles
    (by hash, as the web view allows them: tracking.style_hashes) and images, no script, no
    form, framed only by the console (``frame-ancestors 'self'``), sandboxed again if opened on
    its own."""
    status = 200
    try:
        body = console_campaigns.preview_html(
            state.runtime.catalog, state.runtime.renderer, campaign_id, step, segment_id
        )
    except NotFound as exc:
        body, status = _preview_problem(state, "Not found", _message(exc)), 404
    except CadenceError as exc:  # a template error, a file that does not load: said in the frame
        body = _preview_problem(state, "This email does not render", _message(exc))
    origin = state.settings.base_url.rstrip("/")
    policy = (
        f"default-src 'none'; style-src 'unsafe-hashes' {' '.join(style_hashes(body))}; "
        f"img-src {origin} https: data:; font-src https: data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'self'; sandbox"
    )
    headers = {"Content-Security-Policy": policy, "X-Frame-Options": "SAMEORIGIN"}
    return HTMLResponse(body, status_code=status, headers=headers)


def _preview_problem(state: WebState, title: str, message: str) -> str:
    template = state.templates.get_template("console/preview_problem.html")
    return template.render(title=title, message=message)


def _change(state: WebState, me: StaffIdentity, campaign_id: str, action: str) -> str:
    """Pause, resume or cancel a drip or a newsletter; the sentence that says what happened."""
    if console_campaigns.is_newsletter(state.settings, campaign_id):
        operation = {"pause": newsletters.pause, "resume": newsletters.resume, "cancel": newsletters.cancel}[action]
        new_state, copies = operation(state.settings, campaign_id, actor=me.actor, now=state.now())
        return f"Newsletter {campaign_id} is {new_state} ({copies} copies {action}d)."
    return lifecycle.change_state(state.settings, campaign_id, action, actor=me.actor).message


def _act(request: Request, state: WebState, me: StaffIdentity, campaign_id: str, action: str) -> Response:
    try:
        done = _change(state, me, campaign_id, action)
    except NotFound as exc:
        return _list_page(request, state, me, error=_message(exc), status=404)
    except InputError as exc:
        return _list_page(request, state, me, error=_message(exc), status=400)
    return done_redirect("/admin/campaigns", me, done)


@router.post("/campaigns/{campaign_id}/pause")
def pause(request: Request, state: State, me: Editor, campaign_id: CampaignId) -> Response:
    return _act(request, state, me, campaign_id, "pause")


@router.post("/campaigns/{campaign_id}/resume")
def resume(request: Request, state: State, me: Editor, campaign_id: CampaignId) -> Response:
    return _act(request, state, me, campaign_id, "resume")


@router.post("/campaigns/{campaign_id}/cancel")
def cancel(
    request: Request,
    state: State,
    me: Editor,
    campaign_id: CampaignId,
    confirm: Annotated[str, form_field("confirm", 200)],
) -> Response:
    # Cancelling cannot be undone (operations/lifecycle.py): the name must be typed, as on
    # GitHub's "delete repository", so a slip of the mouse cancels nothing.
    if confirm.strip() != campaign_id:
        error = f"To cancel, type the campaign's name exactly: {campaign_id}. Nothing was cancelled."
        return _list_page(request, state, me, error=error, status=400)
    return _act(request, state, me, campaign_id, "cancel")


@router.post("/campaigns/{campaign_id}/schedule")
def schedule(
    request: Request,
    state: State,
    me: Editor,
    campaign_id: CampaignId,
    at: Annotated[str, form_field("at", 100)],
) -> Response:
    """Schedule a newsletter file as it is now (its text is then locked): at its own send time,
    or `at` (an instant with its offset, "YYYY-MM-DD HH:MM local", or "now")."""
    try:
        done = newsletters.schedule(state.settings, campaign_id, at=at.strip() or None, actor=me.actor, now=state.now())
    except NotFound as exc:
        return _list_page(request, state, me, error=_message(exc), status=404)
    except CadenceError as exc:  # a problem in the file, a time in the past, nobody in the audience
        return _list_page(request, state, me, error=_message(exc), status=400)
    sentence = f"Newsletter {campaign_id} is scheduled for {done.recipients} reader(s), sending at {done.send_at}."
    return done_redirect("/admin/campaigns", me, sentence)


@router.post("/campaigns/{campaign_id}/test")
def send_test(
    request: Request,
    state: State,
    me: Editor,
    campaign_id: CampaignId,
    to: Annotated[str, form_field("to", 2000)],
    step: Annotated[str, form_field("step", 200, "1")],
    segment: Annotated[str, form_field("segment", 200)],
    test_subscriber: Annotated[str, form_field("test_subscriber", 320)],
    back: Annotated[str, form_field("back", 200)],
) -> Response:
    """A test email to `to` (default: the logged-in person's own address), subject "[TEST]".
    From a drip's page (`back` = "campaign"), "As this subscriber" (`test_subscriber`: an
    address or an id) fills it with that person's data and, with no segment chosen, their
    segment, as ``cadence campaigns send-test --subscriber`` does (the same operation); a
    refusal shows that page again with the form as typed. A plain form: no JavaScript needed."""
    to = to.strip() or me.email
    subscriber = test_subscriber.strip()
    try:
        if console_campaigns.is_newsletter(state.settings, campaign_id):
            sent = newsletters.send_test(state.runtime, campaign_id, [to], actor=me.actor, now=state.now())
            done = f"Test sent to {sent} address(es)."
        else:
            # No segment chosen: the subscriber's own (the operation works it out), or the first.
            chosen = segment.strip() or (None if subscriber else _first_segment(state, campaign_id))
            result = send_campaign_test(
                state.runtime,
                campaign_id,
                step=step.strip() or "1",
                segment=chosen,
                to=to,
                subscriber=subscriber or None,
                actor=me.actor,
                subscriber_field=SUBSCRIBER_FIELD,
            )
            refused = f"; refused: {', '.join(result.refused)}" if result.refused else ""
            data_of = f" with the data of {subscriber}" if subscriber else ""
            done = (
                f"Test of {result.step} ({result.segment}){data_of} sent to "
                f"{', '.join(result.sent) or 'nobody'}{refused}."
            )
    except CadenceError as exc:  # a bad address or subscriber, the hourly cap, a file that does not load
        status = 404 if isinstance(exc, NotFound) else 400
        if back == "campaign":
            typed = {"to": to, "step": step, "segment": segment, "subscriber": subscriber}
            return _campaign_page(request, state, me, campaign_id, error=_message(exc), typed=typed, status=status)
        return _list_page(request, state, me, error=_message(exc), status=status)
    if back == "campaign":
        return done_redirect(f"/admin/campaigns/{quote(campaign_id, safe='')}", me, done)
    return done_redirect("/admin/campaigns", me, done)


def _first_segment(state: WebState, campaign_id: str) -> str:
    campaign = state.runtime.catalog.get(campaign_id)  # NotFound / CampaignError for the caller
    return campaign.segments[0].id
