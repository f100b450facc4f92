"""Pick and configure a transport from ``CADENCE_EMAIL_URL``.

==========================================================  =====================================
``outbox://`` (the default), ``outbox:///abs/dir``           .eml files (:mod:`.outbox`)
``smtp://user:pass@host:587``, ``?tls=none``, ``smtps://``   SMTP (:mod:`.smtp`)
``postmark://SERVER_TOKEN@``, ``?message_stream=broadcast``  Postmark batch API (:mod:`.postmark`)
``mailgun://API_KEY@mg.example.com``, ``?region=eu``         Mailgun MIME API (:mod:`.mailgun`)
==========================================================  =====================================

SMTP also takes ``connections=N``: N connections sending at once from one process
(:mod:`.smtp_pool`). Every scheme also takes ``?rate=14/s`` (``/m``, ``/h``, ``/d``) and ``&burst=N``: the transport is
then paced by a token bucket shared through Redis by all workers (:mod:`.ratelimit`). HTTP
transports take ``?base_url=http://127.0.0.1:PORT`` to point them at a test server. An option a
transport does not know is an error, never ignored. Errors name ``CADENCE_EMAIL_URL`` and never
repeat the credentials in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from cadence.errors import ConfigError
from cadence.transports.base import Transport
from cadence.transports.ratelimit import LocalTokenBucket, Rate, RateLimitedTransport, RateLimiter, RedisTokenBucket

__all__ = ["SCHEMES", "open_transport", "redact"]

SCHEMES = ("outbox", "smtp", "smtps", "postmark", "mailgun")
VARIABLE = "CADENCE_EMAIL_URL"


def redact(url: str) -> str:
    """The URL with user and password replaced by ``***`` (safe for logs and error messages)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def open_transport(url: str, *, data_dir: Path, redis_url: str | None) -> Transport:
    """The transport ``url`` describes, rate-limited if it says ``rate=``.

    Raises :class:`ConfigError` naming ``CADENCE_EMAIL_URL`` for anything malformed or unsupported.
    """
    try:
        parts = urlsplit(url.strip())
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"{VARIABLE}: cannot parse {redact(url)!r} ({exc})") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise ConfigError(f"{VARIABLE}: option {key!r} given twice in {redact(url)!r}")
        params[key] = value
    rate_text, burst_text = params.pop("rate", None), params.pop("burst", None)
    scheme = parts.scheme.lower()
    transport: Transport
    try:
        if burst_text is not None and rate_text is None:
            raise ValueError("burst= needs rate=")
        rate = Rate.parse(rate_text, burst_text) if rate_text is not None else None
        if scheme == "outbox":
            from cadence.transports.outbox import OutboxTransport

            transport = OutboxTransport.from_url(parts, params, data_dir=data_dir)
        elif scheme in ("smtp", "smtps"):
            from cadence.transports.smtp_pool import SmtpPool

            transport = SmtpPool.from_url(parts, params)  # ?connections=N; one: a plain SmtpTransport
        elif scheme == "postmark":
            from cadence.transports.postmark import PostmarkTransport

            transport = PostmarkTransport.from_url(parts, params)
        elif scheme == "mailgun":
            from cadence.transports.mailgun import MailgunTransport

            transport = MailgunTransport.from_url(parts, params)
        else:
            raise ValueError(f"unknown scheme {parts.scheme!r}; expected one of {', '.join(SCHEMES)}")
        if params:
            transport.close()
            raise ValueError(f"unsupported option(s) for {scheme}://: {', '.join(sorted(params))}")
    except ValueError as exc:
        raise ConfigError(f"{VARIABLE}: {exc} (in {redact(url)!r})") from exc
    if rate is None:
        return transport
    return RateLimitedTransport(transport, _limiter(url, rate, redis_url))


def _limiter(url: str, rate: Rate, redis_url: str | None) -> RateLimiter:
    if redis_url is None:
        return LocalTokenBucket(rate)
    import redis

    # Everyone sending through the same account shares one bucket: key it on the URL without
    # the pacing options (hashed, so no credential lands in Redis).
    parts = urlsplit(url.strip())
    options = sorted(p for p in parts.query.split("&") if p.partition("=")[0] not in ("rate", "burst"))
    account = parts._replace(query="&".join(options)).geturl()
    key = "cadence:rate:" + hashlib.sha256(account.encode()).hexdigest()[:24]
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    return RedisTokenBucket(client, key, rate)
