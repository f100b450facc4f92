"""RFC 8058 one-click unsubscribe at /u/<token>, the visible unsubscribe page, token purposes,
and the security headers every response carries."""

from __future__ import annotations

from html.parser import HTMLParser

import httpx
import pytest
from sqlalchemy import select

from cadence.core.tokens import make_token
from cadence.db.models import Event
from cadence.db.session import transaction
from tests.support.web import SECRET, WebServer, fresh_ip

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def unsubscribe_url(web: WebServer, address: str) -> tuple[str, int]:
    subscriber_id, delivery_id, _ = web.add_delivery(address)
    return web.url(f"/u/{make_token(SECRET, 'unsubscribe', [subscriber_id, delivery_id])}"), subscriber_id


def status(web: WebServer, address: str) -> str:
    subscriber = web.subscriber(address)
    assert subscriber is not None
    return subscriber.status


def test_a_form_encoded_one_click_post_unsubscribes_at_once_with_200_and_no_redirect(web: WebServer) -> None:
    url, _ = unsubscribe_url(web, "one-click@example.com")
    # What a mail provider sends (RFC 8058 §3.2): no cookies, no CSRF token, no Origin.
    response = httpx.post(url, data=ONE_CLICK, headers=web.from_ip(), follow_redirects=False)
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert status(web, "one-click@example.com") == "unsubscribed"


def test_a_multipart_one_click_post_works_the_same(web: WebServer) -> None:
    url, _ = unsubscribe_url(web, "multipart@example.com")
    response = httpx.post(url, files={"List-Unsubscribe": (None, "One-Click")}, follow_redirects=False)
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert status(web, "multipart@example.com") == "unsubscribed"


def test_a_repeated_post_is_idempotent(web: WebServer) -> None:
    url, _ = unsubscribe_url(web, "twice@example.com")
    first = httpx.post(url, data=ONE_CLICK)
    second = httpx.post(url, data=ONE_CLICK)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert status(web, "twice@example.com") == "unsubscribed"
    subscriber = web.subscriber("twice@example.com")
    assert subscriber is not None
    with transaction(web.settings.database_url) as session:
        kinds = session.scalars(select(Event.kind).where(Event.subscriber_id == subscriber.id)).all()
    assert kinds == ["unsubscribe"]  # recorded once


def test_get_shows_a_page_with_one_button_and_changes_nothing(web: WebServer) -> None:
    url, _ = unsubscribe_url(web, "looking@example.com")
    page = httpx.get(url)
    assert page.status_code == 200
    assert status(web, "looking@example.com") == "active"
    # One click away: a form posting to the same URL, needing no cookie and no CSRF token.
    path = url.removeprefix(web.base_url)
    assert f'<form method="post" action="{path}"' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert "csrf_token" not in page.text and "set-cookie" not in page.headers
    assert "looking@example.com" not in page.text  # masked: a forwarded email leaks less


def test_tampered_unknown_and_wrong_purpose_tokens_all_get_the_same_404(web: WebServer) -> None:
    url, subscriber_id = unsubscribe_url(web, "target@example.com")
    token = url.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    bad_tokens = [
        tampered,
        make_token(SECRET, "unsubscribe", [999_999, 1]),  # validly signed, nobody
        make_token("another-secret-key-of-sufficient-length", "unsubscribe", [subscriber_id, 1]),
        make_token(SECRET, "confirm", [subscriber_id, 1]),  # purposes have their own salts
        make_token(SECRET, "preferences", subscriber_id),
        make_token(SECRET, "unsubscribe", subscriber_id),  # wrong payload shape
        "garbage",
    ]
    bodies = set()
    for bad in bad_tokens:
        for method in ("GET", "POST"):
            response = httpx.request(method, web.url(f"/u/{bad}"), data=ONE_CLICK if method == "POST" else None)
            assert response.status_code == 404, (bad, method)
            bodies.add(response.content)
    assert len(bodies) == 1
    assert status(web, "target@example.com") == "active"


def test_a_confirm_token_never_works_as_a_preferences_token_nor_the_reverse(web: WebServer) -> None:
    subscriber_id, _, _ = web.add_delivery("purposes@example.com")
    assert httpx.get(web.url(f"/p/{make_token(SECRET, 'preferences', subscriber_id)}")).status_code == 200
    for purpose in ("confirm", "unsubscribe", "webview"):
        token = make_token(SECRET, purpose, subscriber_id)  # type: ignore[arg-type]
        assert httpx.get(web.url(f"/p/{token}")).status_code == 404
    token = make_token(SECRET, "preferences", [subscriber_id, "x"])
    assert httpx.get(web.url(f"/confirm/{token}")).status_code == 404


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/subscribe"),
        ("GET", "/static/cadence.css"),
        ("GET", "/no/such/page"),
        ("POST", "/u/not-a-token"),
        ("GET", "/openapi.json"),
        ("GET", "/o/1/forged.gif"),
        ("POST", "/api/subscribe"),
    ],
)
def test_every_response_carries_strict_security_headers(web: WebServer, method: str, path: str) -> None:
    response = httpx.request(method, web.url(path), headers=web.from_ip(fresh_ip()))
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] in ("no-referrer", "strict-origin")
    assert "server" not in response.headers


def test_pages_have_no_script_and_no_inline_style(web: WebServer) -> None:
    page = httpx.get(web.url("/subscribe")).text
    assert "<script" not in page and "style=" not in page and "<style" not in page


def test_the_api_has_no_docs_page_needing_inline_scripts(web: WebServer) -> None:
    assert httpx.get(web.url("/docs")).status_code == 404
    assert "/api/subscribe" in httpx.get(web.url("/openapi.json")).json()["paths"]


def test_static_files_are_cacheable_and_pages_are_not(web: WebServer) -> None:
    assert httpx.get(web.url("/static/cadence.css")).headers["cache-control"].startswith("public")
    assert httpx.get(web.url("/subscribe")).headers["cache-control"] == "no-store"


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: dict[str, dict[str, str | None]] = {}
        self.labels: set[str] = set()
        self.hidden_depth = 0
        self.in_hidden: set[str] = set()
        self._stack: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls[a.get("id") or f"<{tag} without id>"] = a
            if self.hidden_depth:
                self.in_hidden.add(a.get("id") or "")
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"] or "")
        if tag not in ("input", "meta", "link", "br", "img"):
            hidden = a.get("aria-hidden") == "true"
            self._stack.append(hidden)
            self.hidden_depth += hidden

    def handle_endtag(self, tag: str) -> None:
        if tag not in ("input", "meta", "link", "br", "img") and self._stack:
            self.hidden_depth -= self._stack.pop()


def test_every_form_control_has_a_label_and_the_honeypot_is_out_of_reach(web: WebServer) -> None:
    subscriber_id, _, _ = web.add_delivery("labels@example.com")
    preferences = make_token(SECRET, "preferences", subscriber_id)
    pages = [httpx.get(web.url("/subscribe")).text, httpx.get(web.url(f"/p/{preferences}")).text]
    for page in pages:
        parser = _Controls()
        parser.feed(page)
        assert parser.controls and set(parser.controls) <= parser.labels
        assert '<html lang="en">' in page and page.count("<h1") == 1
    first = _Controls()
    first.feed(pages[0])
    assert first.in_hidden == {"website"} and first.controls["website"]["tabindex"] == "-1"
    assert first.controls["email"]["autocomplete"] == "email" and first.controls["email"]["type"] == "email"
