"""Click and open tracking, and the web view: redirects only ever go to stored URLs."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from cadence.core.tokens import link_signature, make_token
from cadence.db.models import Event
from cadence.db.session import transaction
from cadence.operations.tracking import PIXEL_GIF
from tests.support.web import SECRET, WebServer

STORED = "https://precisionbodywork.example/book?utm_source=cadence"


def events(web: WebServer, delivery_id: int) -> list[tuple[str, dict[str, object]]]:
    with transaction(web.settings.database_url) as session:
        rows = session.scalars(select(Event).where(Event.delivery_id == delivery_id).order_by(Event.id))
        return [(e.kind, e.data) for e in rows]


def click_path(delivery_id: int, link_id: int, signature: str | None = None) -> str:
    return f"/c/{delivery_id}/{link_id}/{signature or link_signature(SECRET, 'click', delivery_id, link_id)}"


def test_a_click_redirects_to_the_stored_url_and_is_recorded_once(web: WebServer) -> None:
    _, delivery_id, link_id = web.add_delivery("clicker@example.com", url=STORED)
    assert link_id is not None
    for _ in range(3):  # scanners and people click twice; one event
        response = httpx.get(web.url(click_path(delivery_id, link_id)), follow_redirects=False)
        assert response.status_code in (302, 303)
        assert response.headers["location"] == STORED
    assert events(web, delivery_id) == [("click", {"link_id": link_id, "url": STORED})]


def test_crafted_ids_signatures_and_query_strings_never_redirect_anywhere_else(web: WebServer) -> None:
    _, delivery_id, link_id = web.add_delivery("target.click@example.com", url=STORED)
    _, other_delivery, other_link = web.add_delivery("other.click@example.com", url="https://example.org/other")
    _, js_delivery, js_link = web.add_delivery("js.click@example.com", url="javascript:alert(1)")
    assert link_id and other_link and js_link
    good = click_path(delivery_id, link_id)
    sig = good.rsplit("/", 1)[1]
    crafted = [
        click_path(delivery_id, other_link, sig),  # another link under this delivery's signature
        click_path(other_delivery, link_id, sig),  # this link under another delivery
        click_path(delivery_id, 987_654),  # a validly signed id with no stored link
        click_path(js_delivery, js_link),  # a stored link that is not http(s)
        click_path(delivery_id, link_id, sig[:-1]),
        click_path(delivery_id, link_id, sig.swapcase()),
        click_path(delivery_id, link_id, link_signature(SECRET, "open", delivery_id, link_id)),
        f"/c/{delivery_id}/{link_id}",
        f"/c/abc/{link_id}/{sig}",
        f"/c/{delivery_id}/{link_id}/{sig}/https://evil.example",
        f"/c/{delivery_id}/{link_id}/%2F%2Fevil.example",
    ]
    for path in crafted:
        response = httpx.get(web.url(path), follow_redirects=False)
        assert response.status_code == 404, path
        assert "location" not in response.headers, path
    for query in ("?url=https://evil.example", "?next=//evil.example", "?redirect=javascript:alert(1)"):
        response = httpx.get(web.url(good + query), follow_redirects=False)
        assert response.headers["location"] == STORED
    assert events(web, other_delivery) == [] and events(web, js_delivery) == []


def test_the_open_pixel_is_a_gif_and_records_one_open(web: WebServer) -> None:
    _, delivery_id, _ = web.add_delivery("opener@example.com")
    url = web.url(f"/o/{delivery_id}/{link_signature(SECRET, 'open', delivery_id)}.gif")
    for _ in range(2):
        response = httpx.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
        assert response.content == PIXEL_GIF and response.content.startswith(b"GIF89a")
        assert "no-store" in response.headers["cache-control"]
    assert events(web, delivery_id) == [("open", {})]
    forged = web.url(f"/o/{delivery_id}/{link_signature(SECRET, 'click', delivery_id)}.gif")
    assert httpx.get(forged).status_code == 404


def test_the_web_view_shows_the_email_allowing_only_its_own_inline_styles(web: WebServer) -> None:
    _, delivery_id, _ = web.add_delivery("viewer@example.com", segment="trail+no-race")
    response = httpx.get(web.url(f"/v/{make_token(SECRET, 'webview', delivery_id)}"))
    assert response.status_code == 200
    assert "<title>Why trail miles can leave your low back sore</title>" in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'unsafe-hashes'" in csp and "'sha256-" in csp
    assert "unsafe-inline" not in csp and "script-src" not in csp
    assert "/o/" not in response.text  # no open pixel: viewing in the browser is not an open


def test_the_web_view_of_a_campaign_that_is_gone_is_a_friendly_page(web: WebServer) -> None:
    _, delivery_id, _ = web.add_delivery("old@example.com", campaign="retired-campaign")
    response = httpx.get(web.url(f"/v/{make_token(SECRET, 'webview', delivery_id)}"))
    assert response.status_code == 404
    assert "no longer available" in response.text


def test_a_web_view_token_for_a_missing_delivery_is_just_an_invalid_link(web: WebServer) -> None:
    response = httpx.get(web.url(f"/v/{make_token(SECRET, 'webview', 424_242)}"))
    assert response.status_code == 404 and "not valid" in response.text
