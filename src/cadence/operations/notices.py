"""The subscriber pages' transactional emails, and the ONE function they leave through.

Three kinds, all built from our own text and one link, never from anything a visitor typed
(the form is not a relay; M3AAWG *Sender Best Common Practices* §3.2):

- ``confirmation``: the double opt-in link (:func:`confirmation_message`);
- ``manage``: asked for on ``/manage``: the address's preference link;
- ``data``: asked for on the preference page: a 30-minute, single-use link to download or erase
  everything (issue 10: export and erase must not be one forwarded link away).

From and Reply-To are the sender file's (``campaigns/sender.yaml``), and so are the name and
postal address at the bottom: a newsletter-only form has no drip to borrow them from.

:func:`send_notice` is the seam: it hands the message straight to the transport, like the
confirmation email always has. Issue 12 moves transactional mail onto the ledger's send path
(branch ops-delivery); re-point this one function and every caller follows.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime
from typing import Literal

from markupsafe import escape

from cadence.core.message import Address, OutgoingMessage, build_mime
from cadence.core.sender import Sender
from cadence.runtime import Runtime

log = logging.getLogger(__name__)

LinkKind = Literal["manage", "data"]

_BUTTON_STYLE = (
    "display:inline-block;background:#1d5b63;color:#ffffff;padding:14px 26px;border-radius:6px;"
    "text-decoration:none;font-weight:600"
)
_PAGE_START = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    '</head><body style="margin:0;background:#f3efe8;font-family:-apple-system,Segoe UI,Roboto,Arial,'
    'sans-serif;color:#22303a"><div style="max-width:560px;margin:0 auto;padding:28px;background:#ffffff">'
)

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

_CONFIRM_SUBJECT = "Please confirm your email address"
_CONFIRM_TEXT = """\
Hello,

Someone, hopefully you, asked {clinic} to send {what} to this address.

To confirm, open this link (it works for 7 days):

{url}

If this wasn't you, ignore this email. We won't write to you again.

{clinic}
{address}
"""


def confirmation_message(sender: Sender, what: str, to_email: str, confirm_url: str) -> OutgoingMessage:
    """The confirmation email for a signup to `what` (the form's ``page.confirm`` copy). Only our
    own text and the link: no visitor-supplied value except the address itself, which goes in
    the envelope and To: without a display name."""
    text = _CONFIRM_TEXT.format(what=what, clinic=sender.name, url=confirm_url, address=sender.postal_address)
    button = f'<a href="{escape(confirm_url)}" style="{_BUTTON_STYLE}">Confirm my address</a>'
    html = (
        _PAGE_START.format(title="Confirm your email address")
        + f"<p>Hello,</p><p>Someone, hopefully you, asked {escape(sender.name)} to send {escape(what)} "
        "to this address.</p>"
        f"<p>{button}</p><p>The link works for 7 days. If this wasn't you, ignore this email; "
        "we won't write to you again.</p>"
        f'<p style="color:#5b6770;font-size:14px">{escape(sender.name)}<br>{escape(sender.postal_address)}</p>'
        "</div></body></html>"
    )
    return notice_message(sender, "confirmation", to_email, _CONFIRM_SUBJECT, html=html, text=text)


def link_message(sender: Sender, kind: LinkKind, to_email: str, url: str) -> OutgoingMessage:
    """A ``manage`` or ``data`` email to `to_email` (the address on file) holding `url`."""
    name, address = sender.name, sender.postal_address
    words = {key: value.format(clinic=name) for key, value in _WORDING[kind].items()}
    text = (
        f"Hello,\n\n{words['intro']}\n\n{words['button']}:\n\n{url}\n\n{words['after']}\n"
        f"{words['ignore']}\n\n{name}\n{address}\n"
    )
    button = f'<a href="{escape(url)}" style="{_BUTTON_STYLE}">{escape(words["button"])}</a>'
    html = (
        _PAGE_START.format(title=escape(words["subject"]))
        + f"<p>Hello,</p><p>{escape(words['intro'])}</p><p>{button}</p>"
        f"<p>{escape(words['after'])} {escape(words['ignore'])}</p>"
        f'<p style="color:#5b6770;font-size:14px">{escape(name)}<br>{escape(address)}</p>'
        "</div></body></html>"
    )
    return notice_message(sender, kind, to_email, words["subject"], html=html, text=text)


def notice_message(sender: Sender, kind: str, to_email: str, subject: str, *, html: str, text: str) -> OutgoingMessage:
    """From the sender to the bare address (no display name: nothing typed by a visitor reaches
    a header), with a random Message-ID (not a delivery: it reveals nothing)."""
    domain = sender.email.rsplit("@", 1)[1]
    return OutgoingMessage(
        sender=Address(sender.email, sender.name),
        to=Address(to_email),
        subject=subject,
        html=html,
        text=text,
        message_id=f"<{kind}.{secrets.token_hex(12)}@{domain}>",
        reply_to=sender.reply_to,
        metadata={"kind": kind},
    )


def send_notice(runtime: Runtime, message: OutgoingMessage, now: datetime) -> bool:
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
