"""The one small interface every transport implements (django-anymail's shape)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cadence.core.message import OutgoingMessage

SendStatus = Literal["sent", "transient", "permanent", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one message.

    ``status`` is ``sent`` (the server or provider accepted it), ``transient`` (retry later,
    e.g. SMTP 4xx, HTTP 429/5xx, timeout), ``permanent`` (the *recipient* was refused, e.g. SMTP
    5xx to RCPT: never retry, the address is suppressed) or ``failed`` (the *message or sender*
    was refused, e.g. 5xx to MAIL FROM or to the content: this delivery failed, but the address
    is not to blame and stays on the list). ``retry_after`` is seconds the provider
    asked us to wait (HTTP 429 Retry-After), if any.
    """

    status: SendStatus
    provider_message_id: str | None = None
    detail: str = ""
    retry_after: float | None = None


#: ``on_refused(index, result)``: a transport that learns results one message at a time (SMTP)
#: calls it as soon as recipient ``messages[index]`` is refused for good (``permanent``), before it
#: sends the next message, so the refusal is recorded at once rather than with the group: a crash
#: can then repeat only successful sends, never a bounced one (issue #9). Transports that learn
#: results all together (HTTP batch APIs, the outbox) need not call it; the returned list carries
#: every result either way. An exception from it propagates out of ``send_many``.
RefusalHook = Callable[[int, "SendResult"], None]


class Transport(Protocol):
    """Sends messages; one instance lives for a worker process and is reused across batches.

    ``send_many`` returns one result per message, in order, and must not raise for per-message
    failures (those are results). It raises ``TransientSendError`` only when the whole transport
    is unusable right now (connection refused before anything was sent).

    ``needs_mime`` is False for HTTP APIs that take structured JSON (Postmark): the engine then
    passes ``b""`` instead of building and signing MIME bytes nobody reads.
    """

    needs_mime: bool

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        """Send each (message, mime bytes) pair. Transports that speak MIME use the bytes;
        ``on_refused``: see :data:`RefusalHook`."""
        ...

    def close(self) -> None:
        """Release connections. Safe to call twice."""
        ...
