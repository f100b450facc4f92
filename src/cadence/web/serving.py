"""uvicorn's HTTP/1.1 protocol with a deadline on the request line and headers (slowloris).

uvicorn (0.55, h11) starts no timer when a connection opens, and its keep-alive timer is
cancelled by the first byte of the next request: a client sending a header line every few
seconds, or nothing at all, held a connection (and its memory and file descriptor) forever, and
enough of them exhaust the process's descriptors. :class:`HeaderDeadlineProtocol` arms
one timer whenever the connection waits for a request (on connect, and after each response),
which only a complete request head cancels, whatever bytes trickle in: when it fires the
connection gets ``408 Request Timeout`` (RFC 9110 §15.5.9: a server may send it unasked before
closing an idle connection) and is closed. The same timer closes a connection whose client
keeps sending the rest of a body the app already refused (a 403 before the body was read).

The body itself has its own deadlines in the app (web/body_guard.py). A reverse proxy in front
(docs/deploy.md) is still the first line: it buffers slow clients so none of this is reached.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMEOUT_TEXT = b"the request headers came too slowly\n"
_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT)
)


def header_timeout() -> float:
    from cadence.config import get_settings

    return get_settings().header_timeout_seconds


class HeaderDeadlineProtocol(H11Protocol):
    """See the module docstring. Read from the settings in each process (uvicorn's workers are
    started by import, so a class attribute set in the parent would not reach them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout()
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a complete request head: the app's deadlines take over
            self._disarm()

    def on_response_complete(self) -> None:
        self._arm()  # before: a pipelined request handled inside disarms it again
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # never cut into a response
            self.transport.write(_TIMEOUT_REPLY)
        self.transport.close()
