"""Routes for the other links in every email: click tracking, the open pixel, the web view."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cadence.operations.tracking import PIXEL_GIF, CampaignGone, record_open, resolve_click, web_view
from cadence.web.security import CSP
from cadence.web.state import State, WebState

router = APIRouter(include_in_schema=False)


def _not_found(state: WebState, request: Request) -> Response:
    return state.render(request, "invalid_link.html", status=404)


@router.get("/c/{delivery_id}/{link_id}/{signature}")
def click(delivery_id: int, link_id: int, signature: str, request: Request, state: State) -> Response:
    with state.session() as session:
        url = resolve_click(state.runtime, session, delivery_id, link_id, signature, state.now())
    if url is None:
        return _not_found(state, request)
    # 302 to the stored URL only; the request's query string is ignored on purpose.
    return RedirectResponse(url, status_code=302)


@router.head("/c/{delivery_id}/{link_id}/{signature}")
def click_head(delivery_id: int, link_id: int, signature: str, request: Request, state: State) -> Response:
    """Link checkers and mail scanners ask with HEAD (issue 10: it answered 405): the same
    answer as GET, but nobody clicked, so nothing is recorded."""
    with state.session() as session:
        url = resolve_click(state.runtime, session, delivery_id, link_id, signature, state.now(), record=False)
    if url is None:
        return _not_found(state, request)
    return RedirectResponse(url, status_code=302)


@router.get("/o/{delivery_id}/{signature}.gif")
def open_pixel(delivery_id: int, signature: str, request: Request, state: State) -> Response:
    with state.session() as session:
        valid = record_open(state.runtime, session, delivery_id, signature, state.now())
    if not valid:
        return _not_found(state, request)
    return Response(PIXEL_GIF, media_type="image/gif", headers={"Cache-Control": "no-store, max-age=0"})


@router.get("/v/{token}")
def view_in_browser(token: str, request: Request, state: State) -> Response:
    try:
        with state.session() as session:
            view = web_view(state.runtime, session, token)
    except CampaignGone:
        return state.render(request, "campaign_gone.html", status=404)
    # The email's own inline styles, allowed one by one by hash (see tracking.style_hashes);
    # images may come from any HTTPS host, as they would in a mail client.
    policy = (
        f"{CSP}; style-src 'self' 'unsafe-hashes' {' '.join(view.style_hashes)}; img-src 'self' https: data:"
    )
    return HTMLResponse(view.html, headers={"Content-Security-Policy": policy})
