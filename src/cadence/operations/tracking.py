"""Click and open tracking, and the web view of a sent email.

Click URLs are ``/c/<delivery_id>/<link_id>/<sig>`` and the pixel ``/o/<delivery_id>/<sig>.gif``
(operations/delivery.py). The redirect target is always the stored :class:`~cadence.db.models.Link` row, never
anything from the request, so the tracker cannot be used as an open redirect (OWASP "Unvalidated
Redirects and Forwards"); the HMAC binds the link to the delivery, so ids cannot be swapped.
Events are deduplicated (one ``click`` per delivery and link, one ``open`` per delivery): mail
scanners and image proxies fetch the same URL many times.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.render import CompiledVariant, render_email
from cadence.core.segments import choose_segment
from cadence.core.tokens import check_link_signature, read_token
from cadence.db.models import Delivery, Link, Subscriber
from cadence.errors import NotFound, TokenError
from cadence.operations import newsletter_copies
from cadence.operations.enrollment import record_event
from cadence.operations.runtime import Runtime

# The smallest transparent GIF (GIF89a, 1x1, one transparent colour): 43 bytes.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def resolve_click(
    runtime: Runtime,
    session: Session,
    delivery_id: int,
    link_id: int,
    signature: str,
    now: datetime,
    *,
    record: bool = True,
) -> str | None:
    """The stored URL to redirect to, or None (→ 404) if the signature does not match, the link
    does not exist or is not http(s). Records a ``click`` when `record`, the delivery still
    exists and its campaign tracks clicks (a HEAD from a link checker records nothing)."""
    key = runtime.settings.secret_key
    if not check_link_signature(key, "click", signature, delivery_id, link_id):
        return None
    link = session.get(Link, link_id)
    if link is None or urlsplit(link.url).scheme not in ("http", "https"):
        return None
    delivery = session.get(Delivery, delivery_id) if record else None
    if delivery is not None and _tracks(runtime, delivery, "clicks"):
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        if subscriber is not None:
            record_event(
                session,
                subscriber,
                "click",
                now,
                catalog_campaigns=_campaigns(runtime, delivery.campaign_id),
                delivery_id=delivery.id,
                data={"link_id": link.id, "url": link.url},
                dedupe_key=f"click:{delivery.id}:{link.id}",
            )
    return link.url


def record_open(runtime: Runtime, session: Session, delivery_id: int, signature: str, now: datetime) -> bool:
    """Record an ``open`` for a valid pixel URL. False (→ 404) if the signature does not match."""
    if not check_link_signature(runtime.settings.secret_key, "open", signature, delivery_id):
        return False
    delivery = session.get(Delivery, delivery_id)
    if delivery is not None and _tracks(runtime, delivery, "opens"):
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        if subscriber is not None:
            record_event(
                session, subscriber, "open", now, delivery_id=delivery.id, dedupe_key=f"open:{delivery.id}"
            )
    return True


def _tracks(runtime: Runtime, delivery: Delivery, what: str) -> bool:
    """Whether the campaign tracks `what` *now*: switching tracking off also stops recording for
    emails already sent. A newsletter copy has tracked links only if its locked version tracks
    them (operations/newsletter_copies.py), so a valid signed link is always recorded."""
    if delivery.kind == "newsletter":
        return True
    try:
        tracking = runtime.catalog.get(delivery.campaign_id).tracking
    except NotFound:
        return False
    return bool(tracking.opens if what == "opens" else tracking.clicks)


def _campaigns(runtime: Runtime, campaign_id: str) -> list[Campaign]:
    try:
        return [runtime.catalog.get(campaign_id)]
    except NotFound:
        return []


# ---------------------------------------------------------------------------- web view

class CampaignGone(NotFound):
    """The delivery exists but its campaign (or step) no longer does."""


@dataclass(frozen=True)
class WebView:
    subject: str
    html: str
    style_hashes: tuple[str, ...]  # CSP hashes of its <style> elements and style attributes


def web_view(runtime: Runtime, session: Session, token: str) -> WebView:
    """The email a ``webview`` token names (payload: delivery id), rendered again from the
    delivery's step and recorded segment, safe to share (issue 10).

    The web view is the link people forward and paste into chats, so nothing in it may change
    or reveal anything about the subscriber: no personal unsubscribe or preference link (both
    become the neutral ``/manage``, which asks for an address and emails its owner a link), no
    name or address (rendered as for an anonymous reader: "Hi there"), no click tracking (a
    stranger's click must not land in the subscriber's history) and no open pixel. The page
    carries ``noindex, nofollow`` in a meta tag and in ``X-Robots-Tag`` (web/security.py)."""
    delivery_id = read_token(runtime.settings.secret_key, "webview", token)
    delivery = session.get(Delivery, delivery_id) if isinstance(delivery_id, int) else None
    subscriber = session.get(Subscriber, delivery.subscriber_id) if delivery is not None else None
    if delivery is None or subscriber is None or delivery.state != "sent":
        raise TokenError("this link is not valid")
    if delivery.kind == "newsletter":
        # A newsletter copy is shown as it was sent: from the newsletter's locked version.
        locked = newsletter_copies.web_view_variant(session, delivery.campaign_id)
        if locked is None:
            raise CampaignGone(f"newsletter {delivery.campaign_id!r} is gone")
        variant = locked[1]
    else:
        variant = _drip_variant(runtime, delivery, subscriber)
    base = runtime.settings.base_url
    manage = f"{base}/manage"
    links = {"unsubscribe": manage, "preferences": manage, "web_view": f"{base}/v/{token}"}
    # Attribute names stay (a template may test them), their values do not: the segment
    # already chose the variant, and a race month or a terrain is the subscriber's own.
    anonymous = {"first_name": "", "email": "", "attributes": dict.fromkeys(subscriber.attributes, "")}
    rendered = render_email(variant, subscriber=anonymous, links=links, link_url=None)
    html = _with_robots_meta(rendered.html)
    return WebView(rendered.subject, html, style_hashes(html))


def _drip_variant(runtime: Runtime, delivery: Delivery, subscriber: Subscriber) -> CompiledVariant:
    """The drip step a delivery sent, in its recorded segment (or the one they are in now)."""
    try:
        campaign = runtime.catalog.get(delivery.campaign_id)
        step = campaign.steps[delivery.step_index]
    except (NotFound, IndexError):
        raise CampaignGone(f"campaign {delivery.campaign_id!r} or its step is gone") from None
    try:
        segment = campaign.segment(delivery.segment_id)
    except NotFound:
        sent_on = delivery.sent_at.date() if delivery.sent_at is not None else None
        segment = choose_segment(campaign.segments, subscriber.attributes, sent_on)
    return runtime.renderer.variant(campaign, step, segment)


_ROBOTS_META = '<meta name="robots" content="noindex, nofollow">'


def _with_robots_meta(html: str) -> str:
    """`html` with a robots meta tag right after ``<head>`` (or first, if it has none)."""
    match = re.search(r"<head(\s[^>]*)?>", html, flags=re.IGNORECASE)
    if match is None:
        return _ROBOTS_META + html
    return html[: match.end()] + _ROBOTS_META + html[match.end() :]


class _StyleCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sources: list[str] = []
        self._in_style = False
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "style" and value is not None:
                self.sources.append(value)
        if tag == "style":
            self._in_style, self._buffer = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._in_style:
            self.sources.append("".join(self._buffer))
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._buffer.append(data)


def style_hashes(html: str) -> tuple[str, ...]:
    """CSP source expressions for every inline style in `html`.

    Email HTML is styled inline (MJML output), and our CSP has no ``'unsafe-inline'``; instead
    the web view's policy lists the SHA-256 of each ``<style>`` element and, with
    ``'unsafe-hashes'``, of each ``style=""`` attribute value (CSP Level 3 §6.7.3.2, "hash-source"
    matching of inline style attributes). Only these exact styles can apply.
    """
    collector = _StyleCollector()
    collector.feed(html)
    collector.close()
    seen: dict[str, None] = {}
    for source in collector.sources:
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        seen[f"'sha256-{digest}'"] = None
    return tuple(seen)
