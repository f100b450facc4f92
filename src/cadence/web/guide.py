"""``/guide/<campaign>/<page>``: the public pages of a campaign's guide, the Markdown files under
``campaigns/<campaign>/guide/`` (:mod:`cadence.files.guide_pages`), in the subscriber pages' frame.

Public and cacheable like the signup form: no token, no form, no personal data. An unknown
campaign or page, or a name that is not a page name (``..``, a dot, an encoded slash), is the
ordinary 404 page; names are checked against a strict pattern before any path is built.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cadence.files.guide_pages import list_pages, page_file, read_page
from cadence.web.state import State

router = APIRouter(include_in_schema=False)


@router.get("/guide/{campaign_id}/{page}")
def guide_page(campaign_id: str, page: str, request: Request, state: State) -> Response:
    campaigns_dir = state.settings.campaigns_dir
    path = page_file(campaigns_dir, campaign_id, page)
    if path is None:
        raise StarletteHTTPException(404)
    shown = read_page(path, campaign_id)
    others = []
    for name in list_pages(campaigns_dir, campaign_id):
        other = page_file(campaigns_dir, campaign_id, name)
        if name != page and other is not None:
            others.append((name, read_page(other, campaign_id).title))
    response = state.render(request, "guide_page.html", {"page": shown, "others": others})
    # The same for everyone and changed only by editing a file: caches may keep it a while.
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
