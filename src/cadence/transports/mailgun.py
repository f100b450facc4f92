"""Mailgun's MIME endpoint: ``POST https://api.mailgun.net/v3/DOMAIN/messages.mime``.

URL: ``mailgun://API_KEY@mg.example.com`` (``?region=eu`` → ``api.eu.mailgun.net``),
``&timeout=30``, ``&base_url=http://127.0.0.1:PORT`` for tests.

We send the MIME bytes we built and signed (``needs_mime`` is True), so Mailgun relays exactly
our headers, List-Unsubscribe and DKIM signature included. The request is multipart/form-data
with HTTP basic auth ``api:API_KEY`` and the fields ``to`` (the envelope recipient), ``message``
(the MIME, as a file part) and ``v:NAME`` per metadata entry (Mailgun "custom variables", echoed
in its webhooks as ``user-variables``). One request per message: the endpoint takes one message.

=============================  =================================================================
200 ``{"id", "message"}``      sent; ``id`` is Mailgun's Message-Id
400                            permanent (Mailgun refused this message, e.g. an invalid address)
401, 403, 404                  ``ConfigError``: bad key, domain not allowed, unknown domain/region
413                            permanent (message too large)
429, 5xx                       transient, with Retry-After when given
anything else                  permanent
=============================  =================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import SplitResult, quote, unquote

import requests

from cadence.core.message import OutgoingMessage, validate_addr_spec
from cadence.errors import ConfigError, InputError
from cadence.transports.base import RefusalHook, SendResult
from cadence.transports.http import HttpClient, base_url_param, retry_after

__all__ = ["MailgunTransport", "build_request"]

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


def build_request(msg: OutgoingMessage, mime: bytes) -> dict[str, Any]:
    """``requests`` keyword arguments (form fields and the file part) for one message."""
    if not mime:
        raise ValueError("MailgunTransport needs the MIME bytes (needs_mime is True)")
    data: list[tuple[str, str]] = [("to", validate_addr_spec("To", msg.to.email))]
    for name, value in msg.metadata.items():
        if not name or any(c in name + value for c in "\r\n\x00"):
            raise InputError(f"metadata: {name!r} is not a plain name/value pair")
        data.append((f"v:{name}", value))
    return {"data": data, "files": [("message", ("message.mime", mime, "message/rfc822"))]}


class MailgunTransport:
    """Sends our MIME bytes through Mailgun, one request per message."""

    needs_mime = True

    def __init__(self, api_key: str, domain: str, *, base_url: str = REGIONS["us"], timeout: float = 30.0) -> None:
        if not api_key or not domain:
            raise ValueError("expected mailgun://API_KEY@DOMAIN")
        if "/" in domain or "%" in domain:
            raise ValueError(f"invalid sending domain {domain!r}")
        self._auth = ("api", api_key)
        self.domain = domain
        self.endpoint = f"{base_url.rstrip('/')}/v3/{quote(domain, safe='')}/messages.mime"
        self._http = HttpClient(timeout)

    @classmethod
    def from_url(cls, url: SplitResult, params: dict[str, str]) -> MailgunTransport:
        if not url.hostname or url.password is not None or url.port is not None or url.path not in ("", "/"):
            raise ValueError("expected mailgun://API_KEY@DOMAIN (the sending domain)")
        region = params.pop("region", "us").lower()
        if region not in REGIONS:
            raise ValueError(f"region={region!r}: expected us or eu")
        return cls(
            unquote(url.username or ""),
            url.hostname,
            base_url=base_url_param(params, REGIONS[region]),
            timeout=float(params.pop("timeout", "30")),
        )

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        # Results come back all together: ``on_refused`` is not called (base.RefusalHook).
        results: list[SendResult] = []
        for index, (msg, mime) in enumerate(messages):
            try:
                request = build_request(msg, mime)
            except InputError as exc:
                results.append(SendResult("permanent", detail=str(exc)))
                continue
            try:
                response = self._http.post(self.endpoint, first=index == 0, auth=self._auth, **request)
                if isinstance(response, str):
                    results.append(SendResult("transient", detail=response))
                    continue
                results.append(self.parse_response(response))
            except ConfigError as exc:
                if index == 0:
                    raise
                results += [SendResult("transient", detail=f"not attempted: {exc}") for _ in messages[index:]]
                break
        return results

    def parse_response(self, response: requests.Response) -> SendResult:
        status = response.status_code
        text = _message(response)
        if status == 200:
            try:
                message_id = response.json()["id"]
            except (ValueError, KeyError, TypeError):
                return SendResult("transient", detail=f"Mailgun 200 without an id: {text}")
            return SendResult("sent", provider_message_id=str(message_id), detail=text)
        if status in (401, 403, 404):
            raise ConfigError(
                f"CADENCE_EMAIL_URL: Mailgun refused key or domain {self.domain!r} (HTTP {status}: {text});"
                " check the API key, the sending domain and ?region="
            )
        if status == 429 or status >= 500:
            after = retry_after(response.headers.get("Retry-After"))
            return SendResult("transient", detail=f"Mailgun HTTP {status}: {text}", retry_after=after)
        # 400 (a field refused: our sender, our content) and 413 (too large) are about the
        # message, not the recipient: the delivery fails, the address stays on the list.
        return SendResult("failed", detail=f"Mailgun HTTP {status}: {text}")

    def close(self) -> None:
        self._http.close()


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return response.text[:200]
