"""SMTP submission with one long-lived connection per sending thread of a worker (smtplib).

URLs (``CADENCE_EMAIL_URL``)::

    smtp://user:pass@host:587?tls=starttls     STARTTLS required (the default; RFC 3207)
    smtp://host:25?tls=none                    plain, for local catchers and loopback relays
    smtps://user:pass@host:465                 implicit TLS (RFC 8314 §3.3)
    ...&timeout=30&helo=mailer.example.com&pipelining=no

One connection is opened lazily and reused for every message and batch the process sends:
connection setup (TCP, EHLO, STARTTLS, AUTH) costs several round trips, a message one
MAIL/RCPT/DATA exchange (``bench/message.py`` measures the difference). Before a batch on a
connection idle for a while we send NOOP (RFC 5321 §4.1.1.9) and reconnect if the server has
hung up, as servers may after their idle timeout (§4.5.3.2.7); a connection found dead on MAIL is
reopened and the message retried once, since nothing of it was accepted yet.

When the server offers PIPELINING (RFC 2920; Postfix, Exim and the big providers do), a message
costs two round trips instead of four: its MAIL, RCPT and DATA go out in one write and their
replies are read back in order, then the content. Against a relay 20 ms away that is ~25 instead
of ~12 messages per second per connection; on loopback it also saves most of smtplib's
per-command work (``bench/send_throughput.py``). ``pipelining=no`` falls back to one command per
round trip.

Each message is its own transaction with exactly one recipient, so the RCPT and DATA replies are
that recipient's: 2xx sent, 4xx transient, 5xx permanent (RFC 5321 §4.2.1). 421 means the server
is closing the channel (§3.8): transient, and the next message reconnects. If the connection dies
mid-batch, the message in flight and the ones after it are returned as ``transient`` (after one
reconnect attempt); none is dropped. A connection lost after the message data was sent but before
the final reply is ambiguous (the server may have queued it): still ``transient``; the stable
Message-ID makes a resulting duplicate detectable.

The envelope sender is the From address and the one recipient the To address; ``metadata`` has
no SMTP equivalent (it is for HTTP providers' webhooks, per the OutgoingMessage contract) and is
not written anywhere. Not thread-safe: one instance per process, as the Transport protocol says.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from typing import Literal
from urllib.parse import SplitResult, unquote

from cadence.core.message import OutgoingMessage, validate_addr_spec
from cadence.errors import ConfigError, InputError, TransientSendError
from cadence.transports.base import RefusalHook, SendResult, SendStatus

__all__ = ["SmtpTransport"]

log = logging.getLogger(__name__)

TlsMode = Literal["starttls", "implicit", "none"]

_IDLE_CHECK_AFTER = 5.0  # seconds without traffic before a NOOP probe at the start of a batch
_MAX_RECONNECTS_PER_BATCH = 3


class _ConnectionLost(Exception):
    """The connection died; ``after_data`` if the message content had already been sent."""

    def __init__(self, detail: str, *, after_data: bool, out_of_order: bool = False) -> None:
        super().__init__(detail)
        self.after_data = after_data
        self.out_of_order = out_of_order


DATA_TERMINATION_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6


def _status(code: int, *, recipient: bool) -> SendStatus:
    """A reply code as a result. Only a 5xx to RCPT says the *address* is bad (RFC 5321
    §4.2.1); a 5xx to MAIL FROM or to the content refuses our sender or our message, and must
    not suppress the subscriber."""
    if 200 <= code < 300:
        return "sent"
    if 400 <= code < 500:
        return "transient"
    return "permanent" if recipient else "failed"


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {message}".strip()


class SmtpTransport:
    """Sends over one reused SMTP connection. See the module docstring for the semantics."""

    needs_mime = True

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        tls: TlsMode = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        helo: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        idle_check: float = _IDLE_CHECK_AFTER,
        pipelining: bool = True,
    ) -> None:
        if tls not in ("starttls", "implicit", "none"):
            raise ValueError(f"tls={tls!r}: expected starttls, none (or smtps:// for implicit TLS)")
        if (username is None) != (password is None):
            raise ValueError("SMTP credentials need both a user name and a password")
        self.host = host
        self.port = port or (465 if tls == "implicit" else 587 if tls == "starttls" else 25)
        self.tls: TlsMode = tls
        self._username = username
        self._password = password
        self.timeout = timeout
        # socket.getfqdn() (smtplib's default) may block on a reverse DNS lookup; gethostname not.
        self.helo = helo or socket.gethostname() or "localhost"
        self._ssl_context = ssl_context
        self.idle_check = idle_check
        # RFC 2920 pipelining, used only when the server's EHLO offers it (see _send_pipelined).
        self.pipelining = pipelining
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0
        self.connections_opened = 0

    @classmethod
    def from_url(cls, url: SplitResult, params: dict[str, str]) -> SmtpTransport:
        """``smtp://`` / ``smtps://`` URL; consumes the options it knows from ``params``."""
        if not url.hostname:
            raise ValueError("an SMTP URL needs a host: smtp://user:pass@host:port")
        if url.scheme == "smtps":
            if "tls" in params and params.pop("tls") != "implicit":
                raise ValueError("smtps:// is implicit TLS; drop ?tls= or use smtp://")
            tls: str = "implicit"
        else:
            tls = params.pop("tls", "starttls")
            if tls not in ("starttls", "none"):
                raise ValueError(f"tls={tls!r}: expected tls=starttls or tls=none (smtps:// for implicit)")
        try:
            timeout = float(params.pop("timeout", "30"))
            port = url.port
        except ValueError as exc:
            raise ValueError(f"bad port or timeout ({exc})") from exc
        username = unquote(url.username) if url.username is not None else None
        password = unquote(url.password) if url.password is not None else None
        if username is not None and password is None:
            raise ValueError("SMTP credentials need user:password")
        pipelining = params.pop("pipelining", "yes")
        if pipelining not in ("yes", "no"):
            raise ValueError(f"pipelining={pipelining!r}: expected yes or no")
        return cls(
            url.hostname,
            port,
            tls=tls,  # type: ignore[arg-type]  # checked above
            username=username,
            password=password,
            timeout=timeout,
            helo=params.pop("helo", None),
            pipelining=pipelining == "yes",
        )

    # --- connection ------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and authenticate a connection. Raises OSError/SMTPException on
        network trouble and ConfigError when the server refuses our configuration."""
        smtp: smtplib.SMTP
        if self.tls == "implicit":
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=self.helo, timeout=self.timeout, context=self._context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=self.timeout)
        try:
            # Commands are small writes each awaiting a reply: Nagle would hold them back.
            if smtp.sock is not None:
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo()
            if self.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConfigError(
                        f"CADENCE_EMAIL_URL: {self.host}:{self.port} does not offer STARTTLS;"
                        " use ?tls=none for a plain local server, or smtps:// for implicit TLS"
                    )
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if self._username is not None and self._password is not None:
                try:
                    smtp.login(self._username, self._password)
                except smtplib.SMTPAuthenticationError as exc:
                    raise ConfigError(
                        f"CADENCE_EMAIL_URL: {self.host}:{self.port} refused the credentials"
                        f" ({_reply(exc.smtp_code, exc.smtp_error)})"
                    ) from exc
                except smtplib.SMTPNotSupportedError as exc:
                    raise ConfigError(f"CADENCE_EMAIL_URL: {self.host}:{self.port} does not offer AUTH here") from exc
        except ssl.SSLCertVerificationError as exc:
            _close_quietly(smtp)
            raise ConfigError(f"CADENCE_EMAIL_URL: TLS certificate of {self.host} not trusted ({exc})") from exc
        except BaseException:
            _close_quietly(smtp)
            raise
        self.connections_opened += 1
        return smtp

    def _ensure_connection(self) -> smtplib.SMTP:
        if self._smtp is not None and time.monotonic() - self._last_used >= self.idle_check:
            try:
                code, _ = self._smtp.noop()
                alive = code == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if not alive:
                self._drop()
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def _drop(self) -> None:
        if self._smtp is not None:
            _close_quietly(self._smtp)
            self._smtp = None

    # --- sending ---------------------------------------------------------------------------

    def _transaction(self, smtp: smtplib.SMTP, msg: OutgoingMessage, data: bytes) -> SendResult:
        """MAIL, RCPT, DATA for one message; per-recipient replies become results."""
        sender = validate_addr_spec("From", msg.sender.email)
        recipient = validate_addr_spec("To", msg.to.email)
        after_data = False
        at_rcpt = False
        text: bytes | str
        try:
            code, text = smtp.mail(sender)
            if code == 250:
                code, text = smtp.rcpt(recipient)
                at_rcpt = True
                if code in (250, 251):
                    at_rcpt = False
                    after_data = True
                    try:
                        code, text = self._data(smtp, data)
                    except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
                        code, text = exc.smtp_code, exc.smtp_error
                        after_data = False
            result = SendResult(_status(code, recipient=at_rcpt), detail=_reply(code, text))
            if code == 421:  # RFC 5321 §3.8: the server is closing the channel
                self._drop()
            elif result.status != "sent":
                smtp.rset()  # end the failed transaction before the next MAIL
            return result
        except smtplib.SMTPServerDisconnected as exc:
            raise _ConnectionLost(f"connection lost: {exc}", after_data=after_data) from exc
        except (OSError, smtplib.SMTPResponseException) as exc:
            raise _ConnectionLost(f"connection error: {exc!r}", after_data=after_data) from exc

    @contextlib.contextmanager
    def _final_reply_timeout(self, smtp: smtplib.SMTP) -> Iterator[None]:
        """The RFC 5321 §4.5.3.2.6 wait for the reply to the end of data (10 minutes): a server
        that is slow to accept the content has most likely queued it, and giving up early makes
        the retry a duplicate."""
        if smtp.sock is not None:
            smtp.sock.settimeout(max(self.timeout, DATA_TERMINATION_TIMEOUT))
        try:
            yield
        finally:
            if smtp.sock is not None:
                smtp.sock.settimeout(self.timeout)

    def _data(self, smtp: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
        """DATA, content and final reply, one command per round trip."""
        with self._final_reply_timeout(smtp):
            return smtp.data(data)

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        for _, data in messages:
            if not data:
                raise ValueError("SmtpTransport needs the MIME bytes (needs_mime is True)")
        results: list[SendResult] = []
        reconnects = 0
        retried = -1  # the index of the message last retried on a fresh connection
        while len(results) < len(messages):
            index = len(results)
            try:
                smtp = self._ensure_connection()
            except (OSError, smtplib.SMTPException, ConfigError) as exc:
                self._drop()
                if not results:
                    if isinstance(exc, ConfigError):
                        raise
                    raise TransientSendError(f"SMTP {self.host}:{self.port} unavailable: {exc!r}") from exc
                # Some messages of this call were accepted: their results must reach the ledger,
                # so a reconnect that fails (even on a configuration error, such as AUTH refused
                # with a 454) ends the call with the rest as not attempted, never with a raise.
                detail = f"not attempted: reconnect to {self.host}:{self.port} failed ({exc!r})"
                results += [SendResult("transient", detail=detail) for _ in messages[index:]]
                return results
            reused = self._last_used > 0.0
            try:
                if self.pipelining and smtp.has_extn("pipelining"):
                    self._send_pipelined(smtp, messages, results, on_refused)
                else:
                    self._send_one_by_one(smtp, messages, results, on_refused)
            except _ConnectionLost as lost:
                if lost.out_of_order and self.pipelining:
                    # Some servers offer PIPELINING and then answer out of order (smtp-sink -W
                    # on MAIL or RCPT processes the next command before the delayed one): talk
                    # to this one a command at a time from now on.
                    log.warning("SMTP %s:%s mishandles pipelining (%s); not pipelining", self.host, self.port, lost)
                    self.pipelining = False
                    retried = -1
                self._drop()
                reused = reused or len(results) > index
                self._last_used = 0.0
                reconnects += 1
                index = len(results)
                # Dead before the content went out: nothing was accepted, retry once on a
                # fresh connection (the usual case: the server timed out an idle connection).
                retry = reused or lost.out_of_order
                if retry and not lost.after_data and retried != index and reconnects <= _MAX_RECONNECTS_PER_BATCH:
                    retried = index
                    continue
                detail = str(lost) + (" after DATA; the server may have queued it" if lost.after_data else "")
                results.append(SendResult("transient", detail=detail))
                if reconnects > _MAX_RECONNECTS_PER_BATCH:
                    rest = messages[len(results) :]
                    results += [SendResult("transient", detail="not attempted: connection unstable") for _ in rest]
        return results

    def _send_one_by_one(
        self,
        smtp: smtplib.SMTP,
        messages: Sequence[tuple[OutgoingMessage, bytes]],
        results: list[SendResult],
        on_refused: RefusalHook | None,
    ) -> None:
        """MAIL, RCPT, DATA, content: four round trips per message, for servers without PIPELINING.
        Returns early when the server closed the channel (421); the caller reconnects."""
        for msg, data in messages[len(results) :]:
            try:
                results.append(self._transaction(smtp, msg, data))
            except InputError as exc:  # an address build_mime would have refused too
                results.append(SendResult("failed", detail=str(exc)))
                continue
            self._last_used = time.monotonic()
            _report_refusal(results, on_refused)
            if self._smtp is None:  # 421
                return

    def _send_pipelined(
        self,
        smtp: smtplib.SMTP,
        messages: Sequence[tuple[OutgoingMessage, bytes]],
        results: list[SendResult],
        on_refused: RefusalHook | None,
    ) -> None:
        """RFC 2920 command pipelining: two round trips per message instead of four.

        MAIL, RCPT and DATA go out in one write (DATA must end a group: §3.1) and their replies
        are read in order, every one checked (§3.1): a RCPT refused yet DATA answered 354 still
        gets its lone "." so the server leaves the data phase. Then the content, and its final
        reply is awaited before the next message's commands are written. RFC 2920 would allow
        those commands behind the content (one round trip), but a server that delays the final
        reply while answering later commands (smtp-sink -W does) would then have its replies
        read against the wrong message: a message could be counted as sent that never was.
        Returns early after a 421 (the caller reconnects); on a lost connection
        ``_ConnectionLost.after_data`` tells whether message ``len(results)`` had its content
        sent."""
        for msg, data in messages[len(results) :]:
            try:
                commands = _envelope(msg)
            except InputError as exc:  # an address build_mime would have refused too
                results.append(SendResult("failed", detail=str(exc)))
                continue
            self._pipeline_write(smtp, commands, after_data=False)
            replies: list[tuple[int, bytes]] = []
            for _ in range(3):  # MAIL, RCPT, DATA
                replies.append(self._read_reply(smtp, after_data=False))
                if replies[-1][0] == 421:  # RFC 5321 §3.8: no more replies will come
                    break
            (mail, mail_text), *rest = replies
            rcpt = rest[0][0] if rest else 0
            data_code = rest[1][0] if len(rest) > 1 else 0
            if mail == 250 and rcpt in (250, 251) and data_code == 354:
                self._pipeline_write(smtp, _payload(data), after_data=True)
                if not self._final_reply(smtp, results):
                    return
                continue
            if 200 <= data_code < 300 or (mail != 250 and mail // 100 == 2):
                # A success where none can be: the replies are not this message's. Nothing was
                # sent yet, so a fresh connection may retry it.
                raise _ConnectionLost(f"out-of-order replies: {replies!r}", after_data=False, out_of_order=True)
            if mail != 250:
                code, text, recipient = mail, mail_text, False
            elif rcpt not in (250, 251):
                code, text, recipient = rest[0][0], rest[0][1], True
            else:
                code, text, recipient = rest[1][0], rest[1][1], False
            if any(c == 421 for c, _ in replies):
                # The server is closing the channel (RFC 5321 §3.8). The first refusal is still
                # this message's verdict (a 550 to RCPT before the 421 stays permanent).
                results.append(SendResult(_status(code, recipient=recipient), detail=_reply(code, text)))
                self._drop()
                _report_refusal(results, on_refused)
                return
            if data_code == 354:  # DATA accepted with no valid recipient: end it with a lone "."
                self._pipeline_write(smtp, b".\r\n", after_data=False)
                self._read_reply(smtp, after_data=False)
            elif mail == 250:
                self._pipeline_write(smtp, b"RSET\r\n", after_data=False)
                self._read_reply(smtp, after_data=False)
            results.append(SendResult(_status(code, recipient=recipient), detail=_reply(code, text)))
            self._last_used = time.monotonic()
            _report_refusal(results, on_refused)  # the server is between transactions (after RSET)

    def _final_reply(self, smtp: smtplib.SMTP, results: list[SendResult]) -> bool:
        """Read the reply to a message's end of data and append its result; False after a 421."""
        with self._final_reply_timeout(smtp):
            code, text = self._read_reply(smtp, after_data=True)
        if code // 100 not in (2, 4, 5):  # not an answer to end of data: we cannot tell
            raise _ConnectionLost(f"unexpected reply to the end of data: {_reply(code, text)}", after_data=True)
        results.append(SendResult(_status(code, recipient=False), detail=_reply(code, text)))
        self._last_used = time.monotonic()
        if code == 421:
            self._drop()
            return False
        return True

    @staticmethod
    def _pipeline_write(smtp: smtplib.SMTP, payload: bytes, *, after_data: bool) -> None:
        try:
            smtp.send(payload)
        except (OSError, smtplib.SMTPException) as exc:
            raise _ConnectionLost(f"connection lost: {exc!r}", after_data=after_data) from exc

    @staticmethod
    def _read_reply(smtp: smtplib.SMTP, *, after_data: bool) -> tuple[int, bytes]:
        try:
            code, text = smtp.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            raise _ConnectionLost(f"connection lost: {exc!r}", after_data=after_data) from exc
        if code == -1:  # smtplib's mark for a line that is not an SMTP reply: the stream is lost
            raise _ConnectionLost(f"unintelligible reply {text[:80]!r}", after_data=after_data, out_of_order=True)
        return code, text

    def close(self) -> None:
        """QUIT and close the connection, if any. Safe to call twice."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._drop()


def _envelope(msg: OutgoingMessage) -> bytes:
    """MAIL, RCPT and DATA for one message with one recipient, as one pipelined group."""
    sender = validate_addr_spec("From", msg.sender.email)
    recipient = validate_addr_spec("To", msg.to.email)
    return f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii")


def _payload(data: bytes) -> bytes:
    """The content as it goes after a 354: dot-stuffed (RFC 5321 §4.5.2), ending in CRLF, then
    the end-of-data line. The same bytes smtplib's ``data()`` writes."""
    # bytes.replace, not smtplib's multiline regex: ~70 µs less per 23 KB message.
    stuffed = data.replace(b"\n.", b"\n..") if b"\n." in data else data
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _report_refusal(results: list[SendResult], on_refused: RefusalHook | None) -> None:
    """Hand the latest result to ``on_refused`` if its recipient was refused for good."""
    if on_refused is not None and results and results[-1].status == "permanent":
        on_refused(len(results) - 1, results[-1])


def _close_quietly(smtp: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        smtp.close()
