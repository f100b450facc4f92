"""The newsletter composer (issue 14): /admin/newsletters, a draft's page, and its actions.

Each handler translates the form (web/console/composer_form.py) and calls one of the stored
drafts' operations (operations/newsletter_drafts.py: create, update with the version it was
based on, preview and audience counts of unsaved fields, send a test, schedule). Viewers read;
every write is an editor's POST with the session's CSRF token (auth.Access), answered 403 for
anyone less.

A draft is never lost:

- a refused save (invalid fields, a locked newsletter) answers the same page with the error and
  the posted text in the form;
- a version conflict (someone saved in between) shows their version beside the posted text, and
  the form now names their version, so "Save draft" again means "mine replaces theirs";
- an expired session answers the text it was sent, escaped, with a way to log in again
  (``expired_page``), and static/composer.js keeps the text in localStorage until the server has
  it, then offers it back after the next login.

The preview is the newsletter layout rendered by the operation, answered with its own CSP (its
inline styles allowed by hash, scripts none, ``sandbox``) and shown in ``<iframe sandbox="">``
(no allow-scripts, no allow-same-origin): a script in a newsletter cannot run, nor read the
console, even if the layout let it through.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, JSONResponse, Response

from cadence.errors import CadenceError, InputError, NotFound
from cadence.operations import newsletter_drafts as drafts
from cadence.operations.newsletter_drafts import StoredDraft
from cadence.operations.staff_accounts import StaffIdentity
from cadence.operations.tracking import style_hashes
from cadence.web.console import composer_form as forms
from cadence.web.console.auth import Editor, Viewer, cookie_name, identity_of, read_form
from cadence.web.console.login import return_to
from cadence.web.console.render import done_redirect, done_text, page
from cadence.web.security import CSP
from cadence.web.state import State, WebState, get_state

router = APIRouter(prefix="/admin", include_in_schema=False)
DraftId = Annotated[str, Path(max_length=100)]
BASED_ON = "lower-back-pain"  # the drip whose sender, links and segments a new draft uses
# Paths under /admin/newsletters/ that are not a draft's name (their routes come first).
_RESERVED = frozenset({"new", "preview", "count"})


async def _posted(request: Request) -> forms.Fields:
    # Access has read the form already (its CSRF token); Starlette caches it on the request.
    form: FormData = await read_form(request)
    return forms.fields_of(form)


Posted = Annotated[forms.Fields, Depends(_posted)]


# ---------------------------------------------------------------------------- the page


def _options(state: WebState, based_on: str) -> dict[str, Any]:
    """What the audience builder offers: the sender's topics, the drip's segments, the
    attributes its rules read (a datalist: any attribute may be typed) and the rule tests."""
    try:
        campaign = state.runtime.catalog.get(based_on)
    except CadenceError:  # the drip's file is gone or broken: saving names the problem
        campaign = state.runtime.catalog.get(BASED_ON)
    attributes: dict[str, None] = {}
    for segment in campaign.segments:
        for rule in segment.rules:
            attributes[rule.attribute] = None
        for _, option in segment.composition:
            for rule in getattr(option, "rules", ()):
                attributes[rule.attribute] = None
    return {
        "based_on": campaign.id,
        "topics": list(state.sender.topics.values()),
        "segments": list(campaign.segments),
        "attributes": list(attributes),
        "ops": forms.OPS,
        "timezone": campaign.timezone,
    }


def _composer(
    request: Request,
    state: WebState,
    me: StaffIdentity,
    *,
    draft: StoredDraft | None = None,
    fields: forms.Fields | None = None,
    clean: bool,
    status: int = 200,
    **context: Any,
) -> Response:
    """The composer page: of `draft` (stored; None for a new one) showing `fields` (what was
    posted) or, `clean`, the stored document itself."""
    if fields is None:
        fields = forms.fields_from_document(draft.fields) if draft is not None else {}
    draft_id = draft.id if draft is not None else ""
    version = draft.version if draft is not None else 0
    editable = me.may("editor") and (draft is None or not draft.locked)
    ctx: dict[str, Any] = {
        "draft_id": draft_id,
        "version": version,
        "expected_version": context.pop("expected_version", version),
        "saved_by": draft.updated_by if draft is not None else "",
        "state": draft.state if draft is not None else "",
        "form": fields,
        "options": _options(state, forms.one(fields, "based_on") or BASED_ON),
        "rule_rows": forms.rule_rows(fields),
        "editable": editable,
        "clean": clean,
        "action": f"/admin/newsletters/{draft_id}" if draft_id else "/admin/newsletters/new",
        "preview_src": f"/admin/newsletters/{draft_id}/preview?version={version}" if draft_id else "",
        "counts": None,
        **context,
    }
    return page(request, "composer.html", ctx, me=me, status=status)


def _message(exc: CadenceError) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:]


def _refused(
    request: Request,
    state: WebState,
    me: StaffIdentity,
    draft: StoredDraft | None,
    fields: forms.Fields,
    exc: CadenceError,
) -> Response:
    """The page again after a refused save or action: the error, and the posted text kept."""
    current = _stored_or_none(state, exc.newsletter_id) if isinstance(exc, drafts.VersionConflict) else None
    if current is not None:
        conflict = {"version": current.version, "by": current.updated_by, "document": current.fields}
        # The form now names their version: saving again is a deliberate "mine replaces theirs".
        return _composer(
            request,
            state,
            me,
            draft=current,
            fields=fields,
            clean=False,
            status=409,
            conflict=conflict,
            expected_version=current.version,
        )
    problems = [(p.field, p.message) for p in exc.problems] if isinstance(exc, drafts.DraftInvalid) else []
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, drafts.NameTaken) else 400
    return _composer(
        request,
        state,
        me,
        draft=draft,
        fields=fields,
        clean=False,
        status=status,
        error=_message(exc),
        problems=problems,
        expected_version=forms.one(fields, "expected_version") or (draft.version if draft else 0),
    )


# ---------------------------------------------------------------------------- preview, count


def _preview_response(html: str) -> Response:
    """The rendered email with a policy of its own: its inline styles by hash (as the web view,
    web/links.py), no script at all, ``sandbox`` (inert even opened outside its frame), and
    framing by the console only."""
    policy = (
        f"{CSP}; style-src 'self' 'unsafe-hashes' {' '.join(style_hashes(html))}; "
        "img-src 'self' https: data:; script-src 'none'; sandbox"
    ).replace("frame-ancestors 'none'", "frame-ancestors 'self'")
    headers = {"Content-Security-Policy": policy, "X-Frame-Options": "SAMEORIGIN"}
    return HTMLResponse(html, headers=headers)


def _preview_error(exc: CadenceError) -> Response:
    text = str(exc)
    html = f"<!doctype html><html lang=en><title>Preview</title><p>The preview cannot be shown yet: {_escape(text)}</p>"
    return _preview_response(html)


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def _version_fields(state: WebState, draft_id: str, version: int | None) -> dict[str, Any]:
    """The fields of `version` of the draft (its current one if None); NotFound if none."""
    if version is None:
        return drafts.get(state.settings, draft_id).fields
    for saved in drafts.history(state.settings, draft_id):
        if saved.version == version:
            return saved.fields
    raise NotFound(f"newsletter {draft_id!r} has no version {version}")


@router.get("/newsletters/{draft_id}/preview")
def stored_preview(
    state: State, me: Viewer, draft_id: DraftId, version: Annotated[int | None, Query(ge=1, le=2**31)] = None
) -> Response:
    try:
        fields = _version_fields(state, draft_id, version)
        html = drafts.preview(state.settings, fields, now=state.now(), newsletter_id=draft_id).html
    except NotFound:
        return Response("No such newsletter or version.", status_code=404, media_type="text/plain")
    except CadenceError as exc:
        return _preview_error(exc)
    return _preview_response(html)


@router.post("/newsletters/preview")
def unsaved_preview(state: State, me: Editor, fields: Posted) -> Response:
    document = forms.document_from_fields(fields, BASED_ON)
    name = forms.one(fields, "draft_id") or forms.one(fields, "new_id") or "preview"
    try:
        html = drafts.preview(state.settings, document, now=state.now(), newsletter_id=name).html
    except CadenceError as exc:
        return _preview_error(exc)
    return _preview_response(html)


@router.post("/newsletters/count")
def count(request: Request, state: State, me: Editor, fields: Posted) -> Response:
    """Recipients per segment of the posted audience, nothing saved: JSON for composer.js, the
    composer page with the counts (and the posted text) for a browser without JavaScript."""
    document = forms.document_from_fields(fields, BASED_ON)
    draft_id = forms.one(fields, "draft_id")
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        counted = drafts.audience_counts(state.settings, document, now=state.now(), newsletter_id=draft_id or None)
    except CadenceError as exc:
        if wants_json:
            return JSONResponse({"error": _message(exc)}, status_code=400)
        return _refused(request, state, me, _stored_or_none(state, draft_id) if draft_id else None, fields, exc)
    if wants_json:
        return JSONResponse(counted.document())
    draft = _stored_or_none(state, draft_id) if draft_id else None
    return _composer(
        request,
        state,
        me,
        draft=draft,
        fields=fields,
        clean=False,
        counts=counted,
        expected_version=forms.one(fields, "expected_version") or 0,
    )


# ---------------------------------------------------------------------------- routes


@router.get("/newsletters")
def newsletter_list(request: Request, state: State, me: Viewer, done: str = "", sig: str = "") -> Response:
    found = drafts.list_drafts(state.settings)
    return page(request, "newsletters.html", {"found": found, "done": done_text(me, done, sig)}, me=me)


@router.get("/newsletters/new")
def new_form(request: Request, state: State, me: Editor) -> Response:
    return _composer(request, state, me, clean=True)


@router.post("/newsletters/new")
def create(request: Request, state: State, me: Editor, fields: Posted) -> Response:
    name = forms.one(fields, "new_id")
    document = forms.document_from_fields(fields, BASED_ON)
    try:
        if name in _RESERVED:
            raise InputError(f"short name: {name!r} is a word of the console's addresses; choose another")
        made = drafts.create(state.settings, name, document, actor=me.actor, now=state.now())
    except CadenceError as exc:
        return _refused(request, state, me, None, fields, exc)
    return done_redirect(f"/admin/newsletters/{made.id}", me, f"Saved {made.id}, version {made.version}.")


@router.get("/newsletters/{draft_id}")
def composer(request: Request, state: State, me: Viewer, draft_id: DraftId, done: str = "", sig: str = "") -> Response:
    try:
        draft = drafts.get(state.settings, draft_id)
    except NotFound:
        missing = {"title": "No such newsletter", "message": f"There is no stored newsletter {draft_id}."}
        return page(request, "message.html", missing, me=me, status=404)
    return _composer(request, state, me, draft=draft, clean=True, done=done_text(me, done, sig))


def _save(state: WebState, me: StaffIdentity, draft_id: str, fields: forms.Fields) -> StoredDraft:
    """Store the posted text as the next version of `draft_id` (VersionConflict if the version
    the form was based on is no longer the current one)."""
    expected = forms.one(fields, "expected_version")
    stored = _stored_or_none(state, draft_id)
    document = forms.merged(stored.fields if stored else None, forms.document_from_fields(fields, BASED_ON))
    return drafts.update(
        state.settings,
        draft_id,
        document,
        expected_version=int(expected) if expected.isdigit() else -1,
        actor=me.actor,
        now=state.now(),
    )


def _stored_or_none(state: WebState, draft_id: str) -> StoredDraft | None:
    try:
        return drafts.get(state.settings, draft_id)
    except NotFound:
        return None


@router.post("/newsletters/{draft_id}")
def save(request: Request, state: State, me: Editor, draft_id: DraftId, fields: Posted) -> Response:
    try:
        saved = _save(state, me, draft_id, fields)
    except CadenceError as exc:
        return _refused(request, state, me, _stored_or_none(state, draft_id), fields, exc)
    return done_redirect(f"/admin/newsletters/{saved.id}", me, f"Saved version {saved.version}.")


@router.post("/newsletters/{draft_id}/test")
def send_test(request: Request, state: State, me: Editor, draft_id: DraftId, fields: Posted) -> Response:
    """Save, then send the saved version to the given addresses, subject marked [TEST]; with
    "as subscriber" filled in with that person's data (a plain form field: works without
    JavaScript)."""
    to = [a.strip() for a in forms.one(fields, "test_to").replace(";", ",").split(",") if a.strip()] or [me.email]
    subscriber = forms.one(fields, "test_subscriber").strip()
    try:
        saved = _save(state, me, draft_id, fields)
        sent = drafts.send_test(
            state.runtime,
            draft_id,
            to,
            actor=me.actor,
            now=state.now(),
            subscriber=subscriber,
            subscriber_field="As this subscriber",  # the field's label on the page
        )
    except CadenceError as exc:
        return _refused(request, state, me, _stored_or_none(state, draft_id), fields, exc)
    data_of = f" with the data of {subscriber}" if subscriber else ""
    sentence = f"Saved version {saved.version} and sent a test{data_of} to {sent} address(es): {', '.join(to)}."
    return done_redirect(f"/admin/newsletters/{draft_id}", me, sentence)


@router.post("/newsletters/{draft_id}/schedule")
def schedule(request: Request, state: State, me: Editor, draft_id: DraftId, fields: Posted) -> Response:
    """Save, then schedule the saved version (its text is locked) at the send time it names."""
    try:
        if not forms.send_time_chosen(fields):
            # Without a send time the operation would send at once: that must be chosen, not
            # fallen into by a day left empty.
            raise InputError("send time: give the date and time, or choose “as soon as it is scheduled”")
        saved = _save(state, me, draft_id, fields)
        done = drafts.schedule(
            state.settings, draft_id, expected_version=saved.version, actor=me.actor, now=state.now()
        )
    except CadenceError as exc:
        return _refused(request, state, me, _stored_or_none(state, draft_id), fields, exc)
    sentence = f"Newsletter {draft_id} is scheduled for {done.recipients} reader(s), sending at {done.send_at}."
    return done_redirect(f"/admin/newsletters/{draft_id}", me, sentence)


async def expired_page(request: Request, *, title: str, reason: str) -> Response:
    """A composer POST that cannot be carried out (the session ended, or its form's token is
    from an older session): 403, and the text it carried shown back (escaped, read-only), so
    nothing typed is lost even without JavaScript."""
    state = get_state(request)
    fields: forms.Fields = {}
    # Only for someone who had a session (it ended, or the form is from an older one): a
    # stranger's POST (no cookie) is answered without reading its body (hostile review).
    if _from_here(request, state) and request.cookies.get(cookie_name(state.settings.base_url)):
        fields = forms.fields_of(await read_form(request))
    kept = [(label, forms.one(fields, name)) for name, label in _KEPT if forms.one(fields, name)]
    me = identity_of(request, state)
    # Logging in again leads back to the draft (login.return_to), where composer.js offers the text.
    back = return_to(f"/admin/newsletters/{forms.one(fields, 'draft_id') or 'new'}")
    context = {"title": title, "reason": reason, "kept": kept, "back": back}
    return page(request, "expired.html", context, me=me, status=403)


def _from_here(request: Request, state: WebState) -> bool:
    """Whether the browser says the form came from our own pages. Any site can make a browser
    POST a form here; shown back on our page, its text was words of the attacker's choosing
    under our name and address (content injection, OWASP WSTG-CLNT-03; hostile review). Browsers
    send Origin with every POST (Fetch standard), "null" from privacy-sensitive contexts: only
    our own origin, or none (not a browser, so nobody to mislead), gets its text back."""
    origin = request.headers.get("origin")
    parts = urlsplit(state.settings.base_url)
    return origin is None or origin.lower() == f"{parts.scheme}://{parts.netloc}".lower()


_KEPT = (("new_id", "Short name"), ("subject", "Subject"), ("preheader", "Preheader"), ("body", "Body"))
