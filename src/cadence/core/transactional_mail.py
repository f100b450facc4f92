"""The transactional emails: what they say, and when one must not be sent. Pure (no I/O).

Three messages, all built from our own text and one link, never from anything a visitor typed
(the signup form is not a relay; M3AAWG *Sender Best Common Practices* §3.2):

- ``confirm``: the double opt-in link of a signup;
- ``manage``: asked for on ``/manage``: the address's preference link;
- ``data-link``: asked for on the preference page: a 30-minute, single-use link to download or
  erase everything (issue 10).

They leave through the drip's send path (a ``kind='transactional'`` ledger row; issue 12). The
wording was moved here from ``web/emails.py`` and ``web/subscription.py`` so that the send path,
which must not import the web package, can build them.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from markupsafe import escape

from cadence.core.campaign import Campaign
from cadence.core.message import Address, OutgoingMessage

__all__ = [
    "MESSAGES",
    "TransactionalMessage",
    "build",
    "skip_reason",
]

TransactionalMessage = Literal["confirm", "manage", "data-link"]
MESSAGES: tuple[str, ...] = get_args(TransactionalMessage)

_LINK_WORDING: dict[str, dict[str, str]] = {
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

Someone, hopefully you, asked us to send the free course "{course}" from {clinic} to this
address: seven short lessons over about two and a half weeks and a check-in, then occasional
clinic news.

To confirm, open this link (it works for 7 days):

{url}

If this wasn't you, ignore this email. We won't write to you again.

{clinic}
{address}
"""

_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
    '</head><body style="margin:0;background:#f3efe8;font-family:-apple-system,Segoe UI,Roboto,Arial,'
    'sans-serif;color:#22303a"><div style="max-width:560px;margin:0 auto;padding:28px;background:#ffffff">'
    "{body}"
    '<p style="color:#5b6770;font-size:14px">{clinic}<br>{address}</p>'
    "</div></body></html>"
)


def _button(url: str, label: str) -> str:
    return (
        f'<a href="{escape(url)}" style="display:inline-block;background:#1d5b63;color:#ffffff;'
        f'padding:14px 26px;border-radius:6px;text-decoration:none;font-weight:600">{escape(label)}</a>'
    )


def clinic_of(campaign: Campaign) -> tuple[str, str]:
    """(name, postal address) of the sender, from the campaign's ``context.clinic``."""
    clinic: dict[str, Any] = campaign.context.get("clinic", {}) if isinstance(campaign.context, dict) else {}
    return str(clinic.get("name") or campaign.sender_name), str(clinic.get("postal_address") or "")


def build(
    campaign: Campaign, message: TransactionalMessage, to_email: str, url: str, *, message_id: str
) -> OutgoingMessage:
    """`message` to `to_email` (the address on file) holding `url`, from `campaign`'s sender."""
    name, address = clinic_of(campaign)
    if message == "confirm":
        subject = _CONFIRM_SUBJECT
        text = _CONFIRM_TEXT.format(course=campaign.name, clinic=name, url=url, address=address)
        body = (
            f"<p>Hello,</p><p>Someone, hopefully you, asked us to send the free course "
            f"&ldquo;{escape(campaign.name)}&rdquo; from {escape(name)} to this address: seven short lessons "
            "over about two and a half weeks and a check-in, then occasional clinic news.</p>"
            f"<p>{_button(url, 'Confirm my address')}</p><p>The link works for 7 days. If this wasn't you, "
            "ignore this email; we won't write to you again.</p>"
        )
        title = "Confirm your email address"
    else:
        words = {key: value.format(clinic=name) for key, value in _LINK_WORDING[message].items()}
        subject = title = words["subject"]
        text = (
            f"Hello,\n\n{words['intro']}\n\n{words['button']}:\n\n{url}\n\n{words['after']}\n"
            f"{words['ignore']}\n\n{name}\n{address}\n"
        )
        body = (
            f"<p>Hello,</p><p>{escape(words['intro'])}</p><p>{_button(url, words['button'])}</p>"
            f"<p>{escape(words['after'])} {escape(words['ignore'])}</p>"
        )
    html = _PAGE.format(title=escape(title), body=body, clinic=escape(name), address=escape(address))
    return transactional_message(campaign, message, to_email, subject, html=html, text=text, message_id=message_id)


def transactional_message(
    campaign: Campaign, kind: str, to_email: str, subject: str, *, html: str, text: str, message_id: str
) -> OutgoingMessage:
    """From the campaign's sender to the bare address: no display name, so nothing a visitor
    typed reaches a header. No List-Unsubscribe: the person asked for this one email (RFC 8058
    is for bulk mail)."""
    return OutgoingMessage(
        sender=Address(campaign.sender_email, campaign.sender_name),
        to=Address(to_email),
        subject=subject,
        html=html,
        text=text,
        message_id=message_id,
        reply_to=campaign.reply_to,
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
