"""The transactional emails: what they say, and when one must not be sent. Pure (no I/O).

Three messages, all built from our own text and one link, never from anything a visitor typed
(the signup form is not a relay; M3AAWG *Sender Best Common Practices* §3.2):

- ``confirm``: the double opt-in link of a signup;
- ``manage``: asked for on ``/manage``: the address's preference link;
- ``data-link``: asked for on the preference page: a 30-minute, single-use link to download or
  erase everything (issue 10).

They leave through the drip's send path (a ``kind='transactional'`` ledger row; issue 12). From,
Reply-To, the name and the postal address are the sender file's (``campaigns/sender.yaml``): a
newsletter-only signup form has no drip to borrow them from.
"""

from __future__ import annotations

from typing import Literal, get_args

from markupsafe import escape

from cadence.core.message import Address, OutgoingMessage
from cadence.core.sender import Sender

__all__ = [
    "MESSAGES",
    "TransactionalMessage",
    "build",
    "skip_reason",
]

TransactionalMessage = Literal["confirm", "manage", "data-link"]
MESSAGES: tuple[str, ...] = get_args(TransactionalMessage)

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
    "data-link": {
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


def build(
    sender: Sender, message: TransactionalMessage, to_email: str, url: str, *, what: str, message_id: str
) -> OutgoingMessage:
    """`message` to `to_email` (the address on file) holding `url`, from the sender file's
    address, name and postal address. `what` is the signup form's ``page.confirm`` copy (what
    the person asked for); the link emails do not use it."""
    if message == "confirm":
        return _confirmation(sender, what, to_email, url, message_id)
    name, address = sender.name, sender.postal_address
    words = {key: value.format(clinic=name) for key, value in _WORDING[message].items()}
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
    return _message(sender, message, to_email, words["subject"], html=html, text=text, message_id=message_id)


def _confirmation(sender: Sender, what: str, to_email: str, url: str, message_id: str) -> OutgoingMessage:
    """Only our own text and the link: no visitor-supplied value except the address itself,
    which goes in the envelope and To: without a display name."""
    text = _CONFIRM_TEXT.format(what=what, clinic=sender.name, url=url, address=sender.postal_address)
    button = f'<a href="{escape(url)}" style="{_BUTTON_STYLE}">Confirm my address</a>'
    html = (
        _PAGE_START.format(title="Confirm your email address")
        + f"<p>Hello,</p><p>Someone, hopefully you, asked {escape(sender.name)} to send {escape(what)} "
        "to this address.</p>"
        f"<p>{button}</p><p>The link works for 7 days. If this wasn't you, ignore this email; "
        "we won't write to you again.</p>"
        f'<p style="color:#5b6770;font-size:14px">{escape(sender.name)}<br>{escape(sender.postal_address)}</p>'
        "</div></body></html>"
    )
    return _message(sender, "confirm", to_email, _CONFIRM_SUBJECT, html=html, text=text, message_id=message_id)


def _message(
    sender: Sender, kind: str, to_email: str, subject: str, *, html: str, text: str, message_id: str
) -> OutgoingMessage:
    """From the sender file's address to the bare address: no display name, so nothing a visitor
    typed reaches a header. No List-Unsubscribe: the person asked for this one email (RFC 8058
    is for bulk mail)."""
    return OutgoingMessage(
        sender=Address(sender.email, sender.name),
        to=Address(to_email),
        subject=subject,
        html=html,
        text=text,
        message_id=message_id,
        reply_to=sender.reply_to,
        metadata={"kind": kind},
    )


def skip_reason(
    message: TransactionalMessage, *, subscriber_status: str, suppressed: bool, awaiting_confirmation: bool
) -> str:
    """Why a queued transactional email must not go out *now*, or "" if it may. Checked at send
    time like every delivery: a bounce, complaint or confirmation since it was queued counts.

    - a suppressed address (bounced, complained) gets nothing, whatever it asked for;
    - ``confirm`` only while the signup it belongs to still waits for confirmation (a second
      copy after the person confirmed would be noise; one for an active address is refused by
      the signup already);
    - ``manage`` only to someone who confirmed once (active or unsubscribed), as ``/manage``
      checks when it is asked.
    """
    if suppressed or subscriber_status in ("bounced", "complained"):
        return "address is suppressed"
    if message == "confirm" and not awaiting_confirmation:
        return "signup no longer waits for confirmation"
    if message == "manage" and subscriber_status not in ("active", "unsubscribed"):
        return f"subscriber is {subscriber_status}"
    return ""
