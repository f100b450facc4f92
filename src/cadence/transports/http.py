"""What the HTTP provider transports share: a session, ``base_url``, Retry-After, request errors.

Each provider module keeps the anymail shape (``build_request`` / ``parse_response``); this module
holds only the plumbing that is the same for all of them.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import requests

from cadence.errors import TransientSendError
from cadence.transports.base import SendResult

__all__ = ["HttpClient", "base_url_param", "retry_after", "transient_all"]

USER_AGENT = "cadence-mailer/0.1"


def base_url_param(params: dict[str, str], default: str) -> str:
    """``?base_url=`` (tests point the transport at a local server), else the provider's URL."""
    url = params.pop("base_url", default).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url={url!r}: expected http(s)://host[:port]")
    return url


def retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now(), UTC)).total_seconds())


def transient_all(count: int, detail: str, after: float | None = None) -> list[SendResult]:
    return [SendResult("transient", detail=detail, retry_after=after) for _ in range(count)]


class HttpClient:
    """A ``requests.Session`` kept for the life of the process (TLS and connection reuse)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: requests.Session | None = None

    def post(self, url: str, *, first: bool, **kwargs: object) -> requests.Response | str:
        """POST; a ``str`` says why no response came (for transient results).

        Raises :class:`TransientSendError` when the connection failed on the ``first`` request of
        a call (nothing was sent), as the Transport protocol asks.
        """
        if self._session is None:
            self._session = requests.Session()
            self._session.headers["User-Agent"] = USER_AGENT
        try:
            return self._session.post(url, timeout=self.timeout, **kwargs)  # type: ignore[arg-type]
        except (requests.ConnectionError, requests.Timeout) as exc:
            # ConnectionError (refused, DNS, connect timeout): most likely nothing was sent.
            if first and isinstance(exc, requests.ConnectionError):
                raise TransientSendError(f"{urlsplit(url).netloc} unreachable: {exc}") from exc
            # A read timeout is ambiguous: the provider may have accepted the request.
            return f"no reply from {urlsplit(url).netloc} ({exc.__class__.__name__}); it may have been sent"

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
