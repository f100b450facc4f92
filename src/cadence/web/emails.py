"""The transactional emails of the subscriber pages, and the one function that sends them.

Three kinds, all built from our own text and one link, never from anything a visitor typed
(the form is not a relay; M3AAWG *Sender Best Common Practices* §3.2):

- ``confirmation`` (web/subscription.py builds it): the double opt-in link;
- ``manage``: asked for on ``/manage`` (the neutral link of the shareable web view): the
  address's preference link;
- ``data``: asked for on the preference page: a 30-minute, single-use link to download or erase
  everything (issue 10: export and erase must not be one forwarded link away).

Since issue 12 they leave through the ledger's send path instead: the routes queue a
``kind='transactional'`` delivery (operations/transactional.py) and the send path builds the
email from core/transactional_mail.py (the same wording, moved there). :func:`send_transactional`
and :func:`link_message` below are no longer called by any route: ``WebState.send_link`` and
``subscription.send_confirmation`` are their last users, themselves unused, left for the move of
web/subscription.py and web/state.py into the operations package to delete.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Any, Literal

from markupsafe import escape

from cadence.core.campaign import Campaign
from cadence.core.message import Address, OutgoingMessage, build_mime
from cadence.runtime import Runtime

log = logging.getLogger(__name__)

LinkKind = Literal["manage", "data"]

_WORDING: dict[str, dict[str, str]] = {
    "manage": {
        "subject": "Your email preferences",
        "intro": "Someone, hopefully you, asked for the link to manage this address's emails from {clinic}.",
        "button": "Manage my emails",
        "after": "The link opens your preferences: change your answers, pause or unsubscribe.",
        "ignore": "If this wasn't you, ignore this email: nothing changes.",
    },
    "data": {
        "subject": "Your link to download or erase your data",
        "intro": "Someone, hopefully you, asked from your preference page to download or erase the data "
        "{clinic} holds about this address.",
        "button": "Download or erase my data",
        "after": "The link works once, for 30 minutes.",
        "ignore": "If this wasn't you, ignore this email: nothing changes, and the link expires by itself.",
    },
}


def _clinic(campaign: Campaign) -> tuple[str, str]:
    clinic: dict[str, Any] = campaign.context.get("clinic", {}) if isinstance(campaign.context, dict) else {}
    return str(clinic.get("name") or campaign.sender_name), str(clinic.get("postal_address") or "")


def link_message(campaign: Campaign, kind: LinkKind, to_email: str, url: str) -> OutgoingMessage:
    """A ``manage`` or ``data`` email to `to_email` (the address on file) holding `url`."""
    name, address = _clinic(campaign)
    words = {key: value.format(clinic=name) for key, value in _WORDING[kind].items()}
    text = (
        f"Hello,\n\n{words['intro']}\n\n{words['button']}:\n\n{url}\n\n{words['after']}\n"
        f"{words['ignore']}\n\n{name}\n{address}\n"
    )
    button = (
        f'<a href="{escape(url)}" style="display:inline-block;background:#1d5b63;color:#ffffff;'
        f'padding:14px 26px;border-radius:6px;text-decoration:none;font-weight:600">{escape(words["button"])}</a>'
    )
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(words["subject"])}</title>'
        '</head><body style="margin:0;background:#f3efe8;font-family:-apple-system,Segoe UI,Roboto,Arial,'
        'sans-serif;color:#22303a"><div style="max-width:560px;margin:0 auto;padding:28px;background:#ffffff">'
        f"<p>Hello,</p><p>{escape(words['intro'])}</p><p>{button}</p>"
        f"<p>{escape(words['after'])} {escape(words['ignore'])}</p>"
        f'<p style="color:#5b6770;font-size:14px">{escape(name)}<br>{escape(address)}</p>'
        "</div></body></html>"
    )
    return transactional_message(campaign, kind, to_email, words["subject"], html=html, text=text)


def transactional_message(
    campaign: Campaign, kind: str, to_email: str, subject: str, *, html: str, text: str
) -> OutgoingMessage:
    """From the campaign's sender to the bare address (no display name: nothing typed by a
    visitor reaches a header), with a random Message-ID (not a delivery: it reveals nothing)."""
    domain = campaign.sender_email.rsplit("@", 1)[1]
    return OutgoingMessage(
        sender=Address(campaign.sender_email, campaign.sender_name),
        to=Address(to_email),
        subject=subject,
        html=html,
        text=text,
        message_id=f"<{kind}.{secrets.token_hex(12)}@{domain}>",
        reply_to=campaign.reply_to,
        metadata={"kind": kind},
    )


def send_transactional(runtime: Runtime, message: OutgoingMessage, now: datetime) -> bool:
    """Build the MIME (DKIM-signed when configured) and hand `message` to the transport now.
    True if the transport accepted it; a refusal is logged without the address."""
    transport = runtime.transport
    mime = build_mime(message, date=now, signer=runtime.signer) if transport.needs_mime else b""
    [result] = transport.send_many([(message, mime)])
    if result.status != "sent":
        # Servers quote the recipient in their refusal ("550 5.1.1 <a@b>: ..."): logs must not
        # keep an address that an erase is meant to remove (second review, issue 10).
        detail = re.sub(re.escape(message.to.email), "[address]", result.detail, flags=re.IGNORECASE)
        log.warning("%s email not sent: %s", message.metadata.get("kind", "transactional"), detail)
        return False
    return True
