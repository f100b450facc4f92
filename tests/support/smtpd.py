"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, a free port, everything recorded.

Usage::

    with SmtpSink() as sink:
        send_something(host=sink.host, port=sink.port)
        [received] = sink.wait_for(1)
        assert received.rcpt_tos == ("someone@example.com",)

    # programmable replies, per recipient (case-insensitive), optionally only the first N times
    sink.reply("busy@example.com", "451 4.7.1 Try later", times=1)
    sink.reply("gone@example.com", "550 5.1.1 No such user")
    # or one callable for everything: SmtpSink(rcpt_reply=lambda rcpt: None or "550 ...")

    sink.fail_mail("550 5.7.1 Sender refused", times=1)   # refuse MAIL FROM
    sink.refuse_logins()      # AUTH fails from now on (with SmtpSink(auth=...))
    SmtpSink(data_without_recipients=True)  # 354 to DATA even after every RCPT was refused
    SmtpSink(pipelining=False)  # do not offer PIPELINING (RFC 2920); offered by default, like Postfix
    SmtpSink(record_reads=True).reads   # the bytes of every socket read, to see what was pipelined

    sink.connections          # SMTP connections opened by clients so far (not counting the probe)
    sink.drop_connections()   # the server hangs up on every open connection (client sees EOF)
    sink.hang_up_after(2, refuse_new=True)  # after the 2nd accepted message: hang up, stop listening

TLS: ``SmtpSink(tls=make_tls())`` offers STARTTLS; ``SmtpSink(tls=..., implicit_tls=True)`` speaks
TLS from the first byte (smtps). ``make_tls()`` creates a throwaway self-signed certificate for
``localhost``/``127.0.0.1`` with ``cryptography`` and returns the server context plus a client
context that trusts it. ``SmtpSink(auth=("user", "pass"))`` requires AUTH (allowed without TLS).

Every recorded :class:`ReceivedMessage` carries ``started_at`` (its MAIL FROM) and ``received_at``
(end of DATA) from ``time.monotonic()`` in the process that runs the sink (the test process), so
intervals between messages are measured at the server, whatever the clients' clocks say. The
server runs in its own thread (aiosmtpd's
``Controller``); all shared state is guarded by one lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the sink accepted (250 after DATA)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly the bytes after SMTP dot-unstuffing, CRLF line endings as sent
    received_at: float  # time.monotonic() in the sink's process, when DATA completed
    started_at: float  # time.monotonic() when its MAIL FROM arrived (the start of the transaction)
    connection: int  # 1-based number of the connection it arrived on
    tls: bool
    login: str | None
    peer: str = ""  # the client's IP address (which "host" sent it: tests/support/multihost.py)


@dataclass(frozen=True)
class TlsPair:
    """A self-signed certificate as contexts: the server's and a client's that trusts it."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    cert_pem: bytes


def make_tls(common_name: str = "localhost") -> TlsPair:
    """A throwaway self-signed certificate valid for ``localhost`` and ``127.0.0.1``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # load_cert_chain only reads files; a pipe-free way is a temporary file per context.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        with open(cert_path, "wb") as f:
            f.write(cert_pem)
        with open(key_path, "wb") as f:
            f.write(key_pem)
        server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return TlsPair(server=server, client=client, cert_pem=cert_pem)


class _Reply:
    def __init__(self, response: str, times: int | None) -> None:
        self.response = response
        self.remaining = times


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that records what it receives. See the module docstring."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        rcpt_reply: Callable[[str], str | None] | None = None,
        tls: TlsPair | None = None,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        pipelining: bool = True,
        record_reads: bool = False,
        data_without_recipients: bool = False,
    ) -> None:
        self._lock = threading.Condition()
        self.pipelining = pipelining
        self._mail_replies: list[_Reply] = []
        self._record_reads = record_reads
        # Answer DATA with 354 even when every RCPT was refused (RFC 2920 §3.1 says clients
        # must cope), then refuse the empty transaction at its end.
        self.data_without_recipients = data_without_recipients
        self._reads: list[bytes] = []
        self._messages: list[ReceivedMessage] = []
        self._rcpt_attempts: list[tuple[str, str]] = []
        self._replies: dict[str, _Reply] = {}
        self._data_replies: list[_Reply] = []
        self._rcpt_reply = rcpt_reply
        self._connections = 0
        self._live: list[SMTP] = []
        self._hang_up_after: int | None = None
        self._refuse_new = False
        self._auth = auth
        self.tls = tls

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]

        smtp_kwargs: dict[str, Any] = {"server_hostname": "sink.test", "data_size_limit": None}
        if tls is not None and not implicit_tls:
            smtp_kwargs["tls_context"] = tls.server
        if auth is not None:
            # AUTH over plain TCP is allowed here (loopback tests); over TLS when TLS is on.
            smtp_kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=tls is not None)
        self._controller = _SocketController(
            self,
            _Handler(self),
            hostname=self.host,
            port=self.port,
            ssl_context=tls.server if (tls is not None and implicit_tls) else None,
            **smtp_kwargs,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> SmtpSink:
        self._controller.start()
        with self._lock:
            self._connections = 0  # the Controller's own readiness probe is not a client
            self._live.clear()
        return self

    def stop(self) -> None:
        if self._controller._thread is not None:
            self._controller.stop()
        self._sock.close()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- what was received -----------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of every accepted message, in arrival order."""
        with self._lock:
            return list(self._messages)

    @property
    def rcpt_attempts(self) -> list[tuple[str, str]]:
        """Every RCPT TO seen, with the reply given: ``[(address, "250 OK"), ...]``."""
        with self._lock:
            return list(self._rcpt_attempts)

    @property
    def connections(self) -> int:
        """How many SMTP connections clients have opened so far."""
        with self._lock:
            return self._connections

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages arrived; return them all. Fails on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} messages, got {len(self._messages)}")
                self._lock.wait(left)
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._rcpt_attempts.clear()

    # --- programming the server ------------------------------------------------------------

    def reply(self, rcpt: str, response: str, *, times: int | None = None) -> None:
        """Answer RCPT TO ``rcpt`` with ``response`` (e.g. ``"550 5.1.1 No such user"``).

        ``times=N`` only for the next N attempts, then the address is accepted again.
        """
        with self._lock:
            self._replies[rcpt.lower()] = _Reply(response, times)

    def refuse_logins(self) -> None:
        """From now on AUTH fails (535), as when credentials were revoked or the server's
        authentication backend is down."""
        with self._lock:
            self._auth = ("", "\0refused")

    def fail_mail(self, response: str, *, times: int = 1) -> None:
        """Answer the next ``times`` MAIL FROM commands with ``response``."""
        with self._lock:
            self._mail_replies.append(_Reply(response, times))

    @property
    def reads(self) -> list[bytes]:
        """With ``record_reads=True``: what each socket read returned, in order (a pipelined
        group written at once arrives in one read on loopback)."""
        with self._lock:
            return list(self._reads)

    def fail_data(self, response: str, *, times: int = 1) -> None:
        """Answer the end of DATA with ``response`` (e.g. ``"452 4.3.1 Out of memory"``)."""
        with self._lock:
            self._data_replies.append(_Reply(response, times))

    def drop_connections(self, timeout: float = 5.0) -> None:
        """Hang up on every open client connection and wait until they are closed (the clients
        see EOF on their next read)."""
        with self._lock:
            live = list(self._live)
        for protocol in live:
            transport = protocol.transport
            if transport is not None:
                self._controller.loop.call_soon_threadsafe(transport.close)
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(p in self._live for p in live):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the sink could not close its connections")
                self._lock.wait(left)

    def hang_up_after(self, count: int, *, refuse_new: bool = False) -> None:
        """After the ``count``-th message accepted from now on, close that connection.

        With ``refuse_new`` the server also stops listening, so reconnects are refused.
        """
        with self._lock:
            self._hang_up_after = len(self._messages) + count
            self._refuse_new = refuse_new

    # --- called from the server thread -----------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        with self._lock:
            expected = self._auth
        assert expected is not None
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            )
            == expected
        )
        # handled=False: aiosmtpd itself answers 235 or "535 5.7.8 Authentication credentials invalid"
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _connection_made(self, protocol: SMTP) -> int:
        with self._lock:
            self._connections += 1
            self._live.append(protocol)
            return self._connections

    def _connection_lost(self, protocol: SMTP) -> None:
        with self._lock:
            if protocol in self._live:
                self._live.remove(protocol)
            self._lock.notify_all()

    def _mail(self) -> str | None:
        with self._lock:
            for programmed in self._mail_replies:
                if programmed.remaining:
                    programmed.remaining -= 1
                    return programmed.response
        return None

    def _read(self, data: bytes) -> None:
        if self._record_reads:
            with self._lock:
                self._reads.append(bytes(data))

    def _rcpt(self, address: str) -> str:
        with self._lock:
            programmed = self._replies.get(address.lower())
            response: str | None = None
            if programmed is not None and programmed.remaining != 0:
                response = programmed.response
                if programmed.remaining is not None:
                    programmed.remaining -= 1
            elif self._rcpt_reply is not None:
                response = self._rcpt_reply(address)
            response = response or "250 OK"
            self._rcpt_attempts.append((address, response))
            return response

    def _data(self, protocol: SMTP, session: Session, envelope: Envelope) -> str:
        if not any(envelope.rcpt_tos):
            return "554 5.5.1 Error: no valid recipients"
        with self._lock:
            for programmed in self._data_replies:
                if programmed.remaining:
                    programmed.remaining -= 1
                    return programmed.response
            auth = session.auth_data
            content = envelope.original_content or b""
            self._messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(r for r in envelope.rcpt_tos if r),
                    data=bytes(content),
                    received_at=time.monotonic(),
                    started_at=getattr(envelope, "cadence_mail_at", 0.0),
                    connection=getattr(protocol, "cadence_connection", 0),
                    tls=session.ssl is not None or _is_tls(protocol),
                    login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                    peer=str(session.peer[0]) if isinstance(session.peer, tuple) else "",
                )
            )
            self._lock.notify_all()
            hang_up = self._hang_up_after is not None and len(self._messages) >= self._hang_up_after
            refuse = self._refuse_new
            if hang_up:
                self._hang_up_after = None
        if hang_up:
            # After "250" is written, close this connection (see _RecordingSMTP.push) and, if
            # asked, the listener.
            protocol.cadence_hang_up = True  # type: ignore[attr-defined]
            if refuse and self._controller.server is not None:
                self._controller.loop.call_soon(self._controller.server.close)
        return "250 2.0.0 OK queued"


def _is_tls(protocol: SMTP) -> bool:
    transport = protocol.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        envelope.cadence_mail_at = time.monotonic()  # type: ignore[attr-defined]
        refused = self._sink._mail()
        if refused is not None:
            return refused
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        response = self._sink._rcpt(address)
        if response.startswith("2"):
            envelope.rcpt_tos.append(address)
        elif self._sink.data_without_recipients:
            envelope.rcpt_tos.append("")  # makes aiosmtpd accept DATA; _data refuses it
        return response

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._sink._data(server, session, envelope)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._sink.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses


class _RecordingSMTP(SMTP):
    def __init__(self, sink: SmtpSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self.cadence_connection = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls = self.transport is not None  # the second call, after STARTTLS, is not new
        super().connection_made(transport)
        if not starttls:
            self.cadence_connection = self._sink._connection_made(self)

    async def push(self, status: str) -> None:
        await super().push(status)
        if getattr(self, "cadence_hang_up", False) and self.transport is not None:
            # Hang up right after this reply, discarding any commands the client pipelined
            # behind the message (as a server that closes the socket does): close, then yield
            # so connection_lost cancels the handler before it reads another buffered line.
            self.transport.close()
            await asyncio.sleep(0)

    def data_received(self, data: bytes) -> None:
        self._sink._read(data)
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self._sink._connection_lost(self)
        super().connection_lost(error)


class _SocketController(Controller):
    """aiosmtpd's Controller on a socket we bound ourselves (port 0: no free-port race)."""

    def __init__(self, sink: SmtpSink, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink = sink

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": deliberate for loopback tests.
            warnings.simplefilter("ignore", UserWarning)
            return _RecordingSMTP(self._sink, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sink._sock, ssl=self.ssl_context)


@contextmanager
def smtp_sink(**kwargs: Any) -> Iterator[SmtpSink]:
    """``with smtp_sink() as sink:`` — the same as ``with SmtpSink(**kwargs) as sink:``."""
    with SmtpSink(**kwargs) as sink:
        yield sink


POSTFIX_SINK = "/usr/sbin/smtp-sink"


@contextmanager
def postfix_sink(*options: str, backlog: int = 256) -> Iterator[int]:
    """postfix's ``smtp-sink`` on a free loopback port with `options` (e.g. ``"-W", ".:1"`` to
    delay a reply); yields the port once it accepts connections. The caller checks that
    POSTFIX_SINK exists."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [POSTFIX_SINK, "-4", *options]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]  # smtp-sink refuses to keep root privileges
    process = subprocess.Popen([*command, f"127.0.0.1:{port}", str(backlog)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)
