"""Postmark's batch email API: ``POST https://api.postmarkapp.com/email/batch``.

URL: ``postmark://SERVER_TOKEN@`` with ``?message_stream=broadcast`` for newsletters (Postmark
requires bulk mail on a Broadcast stream; the default is ``outbound``), ``&timeout=30``,
``&base_url=http://127.0.0.1:PORT`` for tests.

Postmark takes structured JSON and writes the MIME itself (``needs_mime`` is False): From, To,
ReplyTo, Subject, HtmlBody, TextBody, MessageStream, Metadata, and ``Headers`` as
``[{"Name", "Value"}]`` carrying Message-ID, List-Id, List-Unsubscribe and List-Unsubscribe-Post
(Postmark's own DKIM signature covers them). Up to 500 messages per request (Postmark's limit);
the answer is an array in request order, one ``{ErrorCode, Message, MessageID, To}`` per message,
with HTTP 200 even when some messages failed. Per-message ``ErrorCode`` (Postmark "API error
codes"):

=====================================  ==========================================================
0                                      sent (``MessageID`` is Postmark's id, used by webhooks)
406 inactive recipient, 300 invalid    permanent: the address bounced/complained or is invalid
100 maintenance, 429 rate limit        transient
10, 400, 401, 405, 412, 413            account/configuration: transient for that message, and
                                       ``ConfigError`` if no message of the call was sent
anything else (402, 403, 409-411...)   permanent: the request for that message is wrong
=====================================  ==========================================================

Whole-request answers: 401 → ``ConfigError`` (bad token); 422 ``{ErrorCode, Message}`` →
``ConfigError`` for the account codes above, else ``PermanentSendError``; 429 and 5xx →
transient with Retry-After; other statuses → ``PermanentSendError``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import SplitResult, unquote

import requests

from cadence.core.message import OutgoingMessage, format_address, provider_headers
from cadence.errors import ConfigError, InputError, PermanentSendError
from cadence.transports.base import RefusalHook, SendResult
from cadence.transports.http import HttpClient, base_url_param, retry_after, transient_all

__all__ = ["PostmarkTransport", "build_payload"]

API_URL = "https://api.postmarkapp.com"
BATCH_LIMIT = 500
CONFIG_CODES = frozenset({10, 400, 401, 405, 412, 413})
TRANSIENT_CODES = frozenset({100, 429})
RECIPIENT_CODES = frozenset({300, 406})
_INACTIVE = re.compile(r"inactive addresses:\s*(.*?)\.\s*Inactive recipients", re.S)


def build_payload(msg: OutgoingMessage, message_stream: str) -> dict[str, Any]:
    """One message object of the batch array (Postmark "Send batch emails")."""
    headers = provider_headers(msg)  # validates like build_mime: no CR/LF anywhere
    if len(msg.metadata) > 10 or any(len(k) > 20 or len(v) > 80 for k, v in msg.metadata.items()):
        # Postmark: at most 10 metadata fields, names <= 20 and values <= 80 characters.
        raise InputError(f"metadata: Postmark allows 10 fields of 20/80 characters, got {msg.metadata!r}")
    payload: dict[str, Any] = {
        "From": format_address(msg.sender, field_name="From"),
        "To": format_address(msg.to, field_name="To"),
        "Subject": msg.subject,
    }
    if msg.reply_to:
        payload["ReplyTo"] = msg.reply_to
    if msg.html:
        payload["HtmlBody"] = msg.html
    if msg.text:
        payload["TextBody"] = msg.text
    if not msg.html and not msg.text:
        raise InputError("message: neither a text nor an HTML body")
    payload["Headers"] = [{"Name": name, "Value": value} for name, value in headers]
    payload["MessageStream"] = message_stream
    if msg.metadata:
        payload["Metadata"] = dict(msg.metadata)
    return payload


class PostmarkTransport:
    """Sends through Postmark's batch endpoint, 500 messages per request."""

    needs_mime = False

    def __init__(
        self, server_token: str, *, message_stream: str = "outbound", base_url: str = API_URL, timeout: float = 30.0
    ) -> None:
        if not server_token:
            raise ValueError("postmark:// needs the server token: postmark://SERVER_TOKEN@")
        self._token = server_token
        self.message_stream = message_stream
        self.endpoint = base_url.rstrip("/") + "/email/batch"
        self._http = HttpClient(timeout)

    @classmethod
    def from_url(cls, url: SplitResult, params: dict[str, str]) -> PostmarkTransport:
        if url.hostname or url.password is not None or url.path not in ("", "/"):
            raise ValueError("expected postmark://SERVER_TOKEN@ (use ?base_url= to change the API host)")
        return cls(
            unquote(url.username or ""),
            message_stream=params.pop("message_stream", "outbound"),
            base_url=base_url_param(params, API_URL),
            timeout=float(params.pop("timeout", "30")),
        )

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        # Results come back all together: ``on_refused`` is not called (base.RefusalHook).
        results: list[SendResult | None] = [None] * len(messages)
        valid: list[tuple[int, dict[str, Any]]] = []
        for index, (msg, _) in enumerate(messages):
            try:
                valid.append((index, build_payload(msg, self.message_stream)))
            except InputError as exc:  # this message can never be sent as it is (not the address's fault)
                results[index] = SendResult("failed", detail=str(exc))
        for start in range(0, len(valid), BATCH_LIMIT):
            chunk = valid[start : start + BATCH_LIMIT]
            try:
                answers = self._post([payload for _, payload in chunk], first=start == 0)
            except (ConfigError, PermanentSendError) as exc:
                if start == 0:
                    raise
                # Earlier chunks went out: report them; the rest was refused as a whole.
                for index, _ in valid[start:]:
                    results[index] = SendResult("transient", detail=f"not attempted: {exc}")
                break
            for (index, _), result in zip(chunk, answers, strict=True):
                results[index] = result
        done = [r for r in results if r is not None]
        assert len(done) == len(messages)
        config = [r.detail for r in done if r.detail.startswith("Postmark account")]
        if config and len(config) == len(done):
            raise ConfigError(f"CADENCE_EMAIL_URL: {config[0]}")
        return done

    def _post(self, chunk: list[dict[str, Any]], *, first: bool) -> list[SendResult]:
        response = self._http.post(
            self.endpoint,
            first=first,
            json=chunk,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "X-Postmark-Server-Token": self._token,
            },
        )
        if isinstance(response, str):
            return transient_all(len(chunk), response)
        return self.parse_response(response, chunk)

    def parse_response(self, response: requests.Response, chunk: list[dict[str, Any]]) -> list[SendResult]:
        status = response.status_code
        if status == 401:
            raise ConfigError("CADENCE_EMAIL_URL: Postmark rejected the server token (HTTP 401)")
        if status == 429 or status >= 500:
            after = retry_after(response.headers.get("Retry-After"))
            return transient_all(len(chunk), f"Postmark HTTP {status}: {response.text[:200]}", after)
        body = _json(response)
        if status == 422:
            code, text = _code(body), str(body.get("Message", "")) if isinstance(body, dict) else response.text
            if code in CONFIG_CODES:
                raise ConfigError(f"CADENCE_EMAIL_URL: Postmark account problem {code}: {text}")
            raise PermanentSendError(f"Postmark rejected the request (422, ErrorCode {code}): {text}")
        if status != 200 or not isinstance(body, list) or len(body) != len(chunk):
            raise PermanentSendError(f"Postmark HTTP {status}: unexpected answer {response.text[:200]!r}")
        return [_result(answer, sent) for answer, sent in zip(body, chunk, strict=True)]

    def close(self) -> None:
        self._http.close()


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _code(body: Any) -> int | None:
    code = body.get("ErrorCode") if isinstance(body, dict) else None
    return code if isinstance(code, int) else None


def _result(answer: Any, sent: dict[str, Any]) -> SendResult:
    code = _code(answer)
    text = str(answer.get("Message", "")) if isinstance(answer, dict) else repr(answer)
    detail = f"{code}: {text}"
    if code == 0:
        # With several recipients Postmark accepts the message but names the inactive ones.
        inactive = _INACTIVE.search(text)
        if inactive and sent["To"].rpartition("<")[2].rstrip(">").lower() in inactive.group(1).lower():
            return SendResult("permanent", detail=detail)
        return SendResult("sent", provider_message_id=str(answer.get("MessageID") or ""), detail=detail)
    if code in RECIPIENT_CODES:
        return SendResult("permanent", detail=detail)
    if code in TRANSIENT_CODES:
        return SendResult("transient", detail=detail)
    if code in CONFIG_CODES:
        return SendResult("transient", detail=f"Postmark account problem {detail}")
    return SendResult("permanent", detail=detail if code is not None else f"unexpected answer: {text}")
