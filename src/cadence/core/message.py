"""Build the MIME bytes of one email (RFC 5322, RFC 2045-2049, RFC 8058, RFC 2369/2919).

OWNER: delivery work (issue 4). The dataclasses below are the contract the engine and the
transports share; keep their fields stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: display name (may be empty) and addr-spec."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """Everything a transport needs to send one email to one recipient.

    ``message_id`` is stable per delivery (``<d{delivery_id}.{hash}@{sender domain}>``), so a
    message sent twice after a crash can be recognised as a duplicate by anyone who sees both.
    ``list_unsubscribe_url`` is the RFC 8058 one-click HTTPS URL; ``list_unsubscribe_mailto``
    the mailto: fallback (RFC 2369). ``metadata`` is passed to HTTP providers that support it
    (delivery id, campaign, step) so their webhooks can be mapped back to a delivery.
    """

    sender: Address
    to: Address
    subject: str
    html: str
    text: str
    message_id: str
    reply_to: str | None = None
    list_id: str | None = None
    list_unsubscribe_url: str | None = None
    list_unsubscribe_mailto: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
