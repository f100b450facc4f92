"""The send path's newsletter half: check and render leased newsletter copies (issue 13).

:func:`cadence.operations.delivery.prepare_and_send` hands every batch here too (its one dispatch point);
this module takes the batch's ``kind = 'newsletter'`` rows, decides each one *now*, and
returns rendered :class:`~cadence.operations.send_results.PreparedSend` items that go out through the drips' own
group sending, rate limits, ledger recording and crash handling (operations/delivery.py, batch_ledger.py).

At send time, for each copy (core/newsletter.py decides, this module only reads and writes):
- the newsletter cancelled → skipped; paused → held (back in the queue on resume, no attempt
  used);
- the subscriber unsubscribed, bounced, complained, or the address suppressed since scheduling
  → skipped; a topic the audience asked for withdrawn → skipped;
- otherwise rendered from the newsletter's locked version (core/newsletter_content.py), never from
  the file as it is now, with the drips' unsubscribe, preference and web-view links, click
  tracking, open pixel and List-Unsubscribe (RFC 8058 one-click) headers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign
from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.core.newsletter import skip_reason
from cadence.core.newsletter_content import locked_variant
from cadence.core.render import CompiledVariant, render_email
from cadence.core.subscriber_fields import email_hash
from cadence.core.tokens import link_signature, make_token
from cadence.core.uri_parity import balance_uri_count, variant_uri_count
from cadence.db import newsletter_audience as audience_store
from cadence.db import newsletters as store
from cadence.db import queries
from cadence.db.session import transaction
from cadence.errors import CadenceError
from cadence.operations.runtime import Runtime
from cadence.operations.send_results import Composed, PreparedSend, SendOutcome

__all__ = [
    "build_copy",
    "load_and_prepare",
]

log = logging.getLogger(__name__)


def load_and_prepare(
    runtime: Runtime, delivery_ids: Sequence[int], now: datetime, outcome: SendOutcome
) -> list[PreparedSend]:
    """The newsletter copies among the leased `delivery_ids`, checked and rendered (one
    transaction); the rest of the batch is not touched."""
    with transaction(runtime.settings.database_url) as session:
        copies = store.leased_copies(session, delivery_ids)
        if not copies:
            return []
        newsletters = store.newsletters_by_id(session, sorted({c.newsletter_id for c in copies}))
        suppressed = audience_store.suppressed_among(session, [email_hash(c.email) for c in copies])
        topics = audience_store.topics_of(session, [c.subscriber_id for c in copies])
        held: list[int] = []
        skipped: dict[str, list[int]] = {}
        prepared: list[PreparedSend] = []
        links: dict[str, dict[str, int]] = {}
        started: set[str] = set()
        for copy in copies:
            newsletter = newsletters.get(copy.newsletter_id)
            state = newsletter.state if newsletter is not None else "cancelled"
            if state == "paused":
                held.append(copy.id)
                continue
            wanted = tuple(newsletter.audience.get("topics", ())) if newsletter is not None else ()
            reason = skip_reason(
                newsletter_state=state,
                subscriber_status=copy.status,
                suppressed=email_hash(copy.email) in suppressed,
                topics_wanted=wanted,
                topics_held=topics.get(copy.subscriber_id, set()),
            )
            if reason or newsletter is None:
                skipped.setdefault(reason or "newsletter is gone", []).append(copy.id)
                continue
            if newsletter.state == "scheduled" and newsletter.id not in started:
                store.mark_sending(session, newsletter.id, now)  # the version is final from now on
                started.add(newsletter.id)
            try:
                campaign, variant = locked_variant(newsletter.id, newsletter.content_hash, newsletter.content)
                if newsletter.id not in links:
                    links[newsletter.id] = queries.store_links(session, variant.links) if variant.links else {}
                prepared.append(
                    _prepare(runtime, campaign, variant, copy, newsletter.content_hash, links[newsletter.id], now)
                )
            except CadenceError as exc:  # an address that cannot be written in a header
                log.error("newsletter copy %s cannot be built: %s", copy.id, exc)
                skipped.setdefault(f"render: {exc}", []).append(copy.id)
        store.finish_copies(session, held, "held", "newsletter paused")
        outcome.postponed += len(held)
        for reason, ids in skipped.items():
            store.finish_copies(session, ids, "skipped", reason)
            outcome.skipped += len(ids)
    return prepared


def _prepare(
    runtime: Runtime,
    campaign: Campaign,
    variant: CompiledVariant,
    copy: store.LeasedCopy,
    content_hash: str,
    link_ids: Mapping[str, int],
    now: datetime,
) -> PreparedSend:
    settings = runtime.settings
    base, key = settings.base_url, settings.secret_key
    # The same signed links as a drip step (operations/delivery.py): the unsubscribe token names the
    # subscriber and this delivery, so the unsubscribe is counted against this newsletter.
    unsubscribe = f"{base}/u/{make_token(key, 'unsubscribe', [copy.subscriber_id, copy.id])}"
    links = {
        "unsubscribe": unsubscribe,
        "preferences": f"{base}/p/{make_token(key, 'preferences', copy.subscriber_id)}",
        "web_view": f"{base}/v/{make_token(key, 'webview', copy.id)}",
    }

    def tracked(index: int, url: str) -> str:
        link_id = link_ids[url]
        return f"{base}/c/{copy.id}/{link_id}/{link_signature(key, 'click', copy.id, link_id)}"

    pixel = f"{base}/o/{copy.id}/{link_signature(key, 'open', copy.id)}.gif" if campaign.tracking.opens else None
    message_id = make_message_id(copy.id, key, campaign.sender_email.rsplit("@", 1)[1])

    def compose() -> Composed:  # when its group is sent (PreparedSend's docstring says why)
        message = build_copy(
            campaign,
            variant,
            delivery_id=copy.id,
            secret_key=key,
            to=Address(copy.email, copy.first_name),
            subscriber={"first_name": copy.first_name, "email": copy.email, "attributes": copy.attributes},
            links=links,
            link_url=tracked if campaign.tracking.clicks else None,
            pixel_url=pixel,
            message_id=message_id,
        )
        return message, build_mime(message, date=now, signer=runtime.signer) if runtime.transport.needs_mime else b""

    return PreparedSend(
        delivery_id=copy.id,
        lease_token=copy.lease_token or "",
        message_id=message_id,
        compose=compose,
        step_id=campaign.id,
        segment_id=copy.segment_id,
        content_hash=content_hash,
        attempts=copy.attempts,
        enrollment_id=None,  # nothing to advance: a newsletter is one email
        subscriber_email=copy.email,
        next_step=0,
        next_send_at=None,
    )


def build_copy(
    campaign: Campaign,
    variant: CompiledVariant,
    *,
    delivery_id: int,
    secret_key: str,
    to: Address,
    subscriber: Mapping[str, Any],
    links: Mapping[str, str],
    link_url: Callable[[int, str], str] | None,
    pixel_url: str | None,
    subject_prefix: str = "",
    message_id: str | None = None,
) -> OutgoingMessage:
    """One newsletter email (also the test send's, with a ``[TEST]`` `subject_prefix`).
    `message_id`: the copy's, when the caller made it already (make_message_id of the delivery)."""
    rendered = render_email(variant, subscriber=subscriber, links=links, link_url=link_url)
    html = rendered.html
    if pixel_url is not None:
        tag = f'<img src="{pixel_url}" width="1" height="1" alt="" style="display:block;border:0;height:1px;width:1px">'
        index = html.rfind("</body>")
        html = html[:index] + tag + html[index:] if index != -1 else html + tag
    # rspamd's URI_COUNT_ODD: the pixel needs a counterpart in the text part (core/uri_parity.py).
    count = variant_uri_count((variant.content_hash, pixel_url is not None), html, rendered.text)
    text = balance_uri_count(html, rendered.text, links["web_view"], count=count)
    domain = campaign.sender_email.rsplit("@", 1)[1]
    return OutgoingMessage(
        sender=Address(campaign.sender_email, campaign.sender_name),
        to=to,
        subject=f"{subject_prefix}{rendered.subject}",
        html=html,
        text=text,
        message_id=message_id or make_message_id(delivery_id, secret_key, domain),
        reply_to=campaign.reply_to,
        list_id=f"{campaign.name} <{campaign.id}.{domain}>",
        list_unsubscribe_url=links["unsubscribe"],
        list_unsubscribe_mailto=f"mailto:unsubscribe@{domain}?subject=unsubscribe",
        metadata={"delivery_id": str(delivery_id), "campaign": campaign.id, "step": "newsletter"},
    )


def web_view_variant(session: Session, newsletter_id: str) -> tuple[Campaign, CompiledVariant] | None:
    """The locked version of a newsletter, for the web view of a sent copy (operations/tracking.py)."""
    newsletter = store.newsletters_by_id(session, [newsletter_id]).get(newsletter_id)
    if newsletter is None:
        return None
    return locked_variant(newsletter.id, newsletter.content_hash, newsletter.content)
