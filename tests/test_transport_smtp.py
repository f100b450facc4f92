"""SmtpTransport against a real SMTP server (aiosmtpd): replies, reuse, reconnects, TLS, AUTH."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.errors import ConfigError, TransientSendError
from cadence.transports.registry import open_transport
from cadence.transports.smtp import SmtpTransport, _payload
from tests.support.services import unavailable
from tests.support.smtpd import POSTFIX_SINK, SmtpSink, make_tls, postfix_sink

DATE = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)


def batch(*recipients: str, start: int = 0) -> list[tuple[OutgoingMessage, bytes]]:
    pairs = []
    for n, rcpt in enumerate(recipients, start):
        msg = OutgoingMessage(
            sender=Address("news@example.com", "News"),
            to=Address(rcpt),
            subject=f"Message {n}",
            html=f"<p>{n}</p>",
            text=f"{n}\n.\n..leading dots survive dot-stuffing\n",
            message_id=make_message_id(n, "secret", "example.com"),
        )
        pairs.append((msg, build_mime(msg, date=DATE)))
    return pairs


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-per-round-trip"])
def sink(request: pytest.FixtureRequest) -> Iterator[SmtpSink]:
    """Every test below runs against a server that offers PIPELINING (RFC 2920), as Postfix does,
    and against one that does not."""
    with SmtpSink(pipelining=request.param) as running:
        yield running


@pytest.fixture
def transport(sink: SmtpSink) -> Iterator[SmtpTransport]:
    smtp = SmtpTransport(sink.host, sink.port, tls="none", timeout=5)
    yield smtp
    smtp.close()


def test_per_recipient_replies_map_to_sent_transient_and_permanent(sink: SmtpSink, transport: SmtpTransport) -> None:
    sink.reply("busy@example.org", "451 4.7.1 Try again later")
    sink.reply("gone@example.org", "550 5.1.1 No such user")
    sink.reply("full@example.org", "452 4.2.2 Mailbox full")
    sink.reply("blocked@example.org", "554 5.7.1 Rejected by policy")
    rcpts = ["a@example.org", "busy@example.org", "b@example.org", "gone@example.org", "full@example.org"]
    results = transport.send_many(batch(*rcpts, "blocked@example.org", "c@example.org"))
    assert [r.status for r in results] == [
        "sent",
        "transient",
        "sent",
        "permanent",
        "transient",
        "permanent",
        "sent",
    ]
    assert results[1].detail == "451 4.7.1 Try again later"
    assert results[3].detail == "550 5.1.1 No such user"
    received = sink.wait_for(3)
    assert [m.rcpt_tos for m in received] == [("a@example.org",), ("b@example.org",), ("c@example.org",)]
    assert all(m.mail_from == "news@example.com" for m in received)
    assert received[0].data == batch("a@example.org")[0][1]  # byte-exact after dot-(un)stuffing
    assert sink.connections == 1


def test_a_failed_data_reply_is_classified_by_its_code(sink: SmtpSink, transport: SmtpTransport) -> None:
    sink.fail_data("452 4.3.1 Insufficient system storage")
    sink.fail_data("554 5.6.0 Message content rejected")
    results = transport.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
    # 554 to the content refuses the message, not the address: "failed", never a suppression.
    assert [r.status for r in results] == ["transient", "failed", "sent"]


def test_a_refused_sender_fails_the_message_without_blaming_the_recipient(
    sink: SmtpSink, transport: SmtpTransport
) -> None:
    sink.fail_mail("550 5.7.1 Sender address rejected")
    sink.fail_mail("451 4.3.0 Sender verification deferred")
    results = transport.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
    assert [r.status for r in results] == ["failed", "transient", "sent"]
    assert results[0].detail == "550 5.7.1 Sender address rejected"
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [("c@example.org",)]
    assert sink.connections == 1


def test_421_to_the_content_is_transient_and_the_rest_go_out_on_a_new_connection(
    sink: SmtpSink, transport: SmtpTransport
) -> None:
    sink.fail_data("421 4.3.2 Service shutting down")
    results = transport.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
    assert [r.status for r in results] == ["transient", "sent", "sent"]
    assert [m.rcpt_tos[0] for m in sink.wait_for(2)] == ["b@example.org", "c@example.org"]
    assert sink.connections == 2


def reads_for_two_messages(*, pipelining: bool) -> list[bytes]:
    """What the server's socket reads returned while two messages were sent to it."""
    with SmtpSink(record_reads=True, pipelining=pipelining) as sink:
        transport = SmtpTransport(sink.host, sink.port, tls="none", timeout=5)
        try:
            assert [r.status for r in transport.send_many(batch("a@example.org", "b@example.org"))] == ["sent"] * 2
        finally:
            transport.close()
        return sink.reads


def test_pipelining_sends_each_message_in_two_round_trips() -> None:
    """RFC 2920: MAIL, RCPT and DATA travel together; the content follows their replies, and the
    next message's commands wait for the content's final reply."""
    reads = reads_for_two_messages(pipelining=True)
    for rcpt in (b"a@example.org", b"b@example.org"):
        group = b"MAIL FROM:<news@example.com>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n"
        assert group in reads, f"the commands for {rcpt!r} did not arrive in one write"
    assert not any(b"\r\n.\r\n" in r and b"MAIL FROM" in r for r in reads)


def test_without_pipelining_on_offer_each_command_waits_for_its_reply() -> None:
    reads = reads_for_two_messages(pipelining=False)
    assert not any(b"MAIL FROM" in r and b"RCPT TO" in r for r in reads)
    assert not any(b"\r\n.\r\n" in r and b"MAIL FROM" in r for r in reads)


def test_a_server_that_answers_354_with_no_valid_recipient_gets_a_lone_dot() -> None:
    """RFC 2920 §3.1: check every reply; DATA may be accepted even though RCPT failed."""
    with SmtpSink(data_without_recipients=True) as sink:
        sink.reply("gone@example.org", "550 5.1.1 No such user")
        transport = SmtpTransport(sink.host, sink.port, tls="none", timeout=5)
        try:
            results = transport.send_many(batch("a@example.org", "gone@example.org", "c@example.org"))
        finally:
            transport.close()
        assert [r.status for r in results] == ["sent", "permanent", "sent"]
        assert results[1].detail == "550 5.1.1 No such user"
        assert [m.rcpt_tos for m in sink.wait_for(2)] == [("a@example.org",), ("c@example.org",)]
        assert sink.connections == 1


def test_one_connection_is_reused_across_batches(sink: SmtpSink, transport: SmtpTransport) -> None:
    first = transport.send_many(batch("a@example.org", "b@example.org"))
    second = transport.send_many(batch("c@example.org", "d@example.org", start=2))
    assert [r.status for r in first + second] == ["sent"] * 4
    assert sink.connections == 1 and transport.connections_opened == 1
    assert {m.connection for m in sink.wait_for(4)} == {1}
    assert transport._smtp is not None and transport._smtp.sock is not None
    assert transport._smtp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_connection_the_server_dropped_between_batches_is_reopened(sink: SmtpSink, transport: SmtpTransport) -> None:
    assert [r.status for r in transport.send_many(batch("a@example.org"))] == ["sent"]
    sink.drop_connections()
    results = transport.send_many(batch("b@example.org", "c@example.org", start=1))
    assert [r.status for r in results] == ["sent", "sent"]
    assert sink.connections == 2
    assert [m.connection for m in sink.wait_for(3)] == [1, 2, 2]


def test_an_idle_connection_is_probed_with_noop_before_use(sink: SmtpSink) -> None:
    transport = SmtpTransport(sink.host, sink.port, tls="none", idle_check=0.0)
    try:
        transport.send_many(batch("a@example.org"))
        sink.drop_connections()
        assert [r.status for r in transport.send_many(batch("b@example.org", start=1))] == ["sent"]
        assert transport.connections_opened == 2
    finally:
        transport.close()


def test_a_server_hanging_up_mid_batch_costs_one_reconnect(sink: SmtpSink, transport: SmtpTransport) -> None:
    sink.hang_up_after(2)
    results = transport.send_many(batch(*[f"r{n}@example.org" for n in range(5)]))
    assert [r.status for r in results] == ["sent"] * 5
    assert [m.connection for m in sink.wait_for(5)] == [1, 1, 2, 2, 2]


def test_when_the_server_is_gone_mid_batch_the_rest_is_transient_not_dropped(
    sink: SmtpSink, transport: SmtpTransport
) -> None:
    sink.hang_up_after(2, refuse_new=True)
    results = transport.send_many(batch(*[f"r{n}@example.org" for n in range(5)]))
    assert len(results) == 5
    assert [r.status for r in results] == ["sent", "sent", "transient", "transient", "transient"]
    assert all("not attempted" in r.detail for r in results[2:])
    assert len(sink.messages) == 2
    with pytest.raises(TransientSendError):  # nothing can be sent now: the whole call fails
        transport.send_many(batch("later@example.org"))


def test_421_closes_the_channel_and_the_next_message_reconnects(sink: SmtpSink, transport: SmtpTransport) -> None:
    sink.reply("b@example.org", "421 4.3.2 Service shutting down", times=1)
    results = transport.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
    assert [r.status for r in results] == ["sent", "transient", "sent"]
    assert sink.connections == 2


def test_connection_refused_before_anything_was_sent_raises_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connections are refused
        transport = SmtpTransport("127.0.0.1", port, tls="none", timeout=2)
        with pytest.raises(TransientSendError, match="unavailable"):
            transport.send_many(batch("a@example.org"))
        transport.close()
        transport.close()  # safe twice


def test_starttls_with_a_self_signed_certificate_and_auth() -> None:
    tls = make_tls()
    with SmtpSink(tls=tls, auth=("mailer", "s3cret")) as sink:
        transport = SmtpTransport(
            sink.host, sink.port, tls="starttls", username="mailer", password="s3cret", ssl_context=tls.client
        )
        try:
            assert [r.status for r in transport.send_many(batch("a@example.org"))] == ["sent"]
        finally:
            transport.close()
        [received] = sink.wait_for(1)
        assert received.tls and received.login == "mailer"


def test_accepted_messages_keep_their_results_when_the_reconnect_is_refused() -> None:
    """After the server hangs up mid-call, a reconnect that fails on configuration (AUTH refused)
    must not raise away the results of messages already accepted: they would be sent again."""
    with SmtpSink(auth=("mailer", "s3cret")) as sink:
        transport = SmtpTransport(sink.host, sink.port, tls="none", username="mailer", password="s3cret", timeout=5)
        try:
            assert [r.status for r in transport.send_many(batch("a@example.org"))] == ["sent"]
            sink.refuse_logins()
            sink.hang_up_after(1)
            results = transport.send_many(batch("b@example.org", "c@example.org", "d@example.org", start=1))
            assert [r.status for r in results] == ["sent", "transient", "transient"]
            assert "refused the credentials" in results[1].detail
            with pytest.raises(ConfigError, match="CADENCE_EMAIL_URL"):  # nothing sent yet: raise
                transport.send_many(batch("e@example.org", start=4))
        finally:
            transport.close()
        assert [m.rcpt_tos[0] for m in sink.wait_for(2)] == ["a@example.org", "b@example.org"]


def test_implicit_tls_smtps() -> None:
    tls = make_tls()
    with SmtpSink(tls=tls, implicit_tls=True) as sink:
        transport = SmtpTransport(sink.host, sink.port, tls="implicit", ssl_context=tls.client)
        try:
            assert [r.status for r in transport.send_many(batch("a@example.org"))] == ["sent"]
        finally:
            transport.close()
        assert sink.wait_for(1)[0].tls


def test_an_untrusted_certificate_is_a_configuration_error() -> None:
    with SmtpSink(tls=make_tls()) as sink:
        transport = SmtpTransport(sink.host, sink.port, tls="starttls", ssl_context=make_tls().client)
        with pytest.raises(ConfigError, match="not trusted"):
            transport.send_many(batch("a@example.org"))
        assert sink.messages == []


def test_starttls_required_but_not_offered_is_a_configuration_error(sink: SmtpSink) -> None:
    transport = SmtpTransport(sink.host, sink.port)  # tls=starttls is the default
    with pytest.raises(ConfigError, match=r"CADENCE_EMAIL_URL: .* does not offer STARTTLS"):
        transport.send_many(batch("a@example.org"))


def test_wrong_credentials_are_a_configuration_error_naming_the_variable() -> None:
    with SmtpSink(auth=("mailer", "s3cret")) as sink:
        transport = SmtpTransport(sink.host, sink.port, tls="none", username="mailer", password="wrong")
        with pytest.raises(ConfigError, match=r"CADENCE_EMAIL_URL: .* refused the credentials"):
            transport.send_many(batch("a@example.org"))


def test_the_url_carries_credentials_and_options(tmp_path: Path) -> None:
    with SmtpSink(auth=("mail er", "p@ss:word")) as sink:
        url = f"smtp://mail%20er:p%40ss%3Aword@{sink.host}:{sink.port}?tls=none&timeout=5&helo=cadence.test"
        transport = open_transport(url, data_dir=tmp_path, redis_url=None)
        try:
            assert [r.status for r in transport.send_many(batch("a@example.org"))] == ["sent"]
        finally:
            transport.close()
        assert sink.wait_for(1)[0].login == "mail er"


@pytest.mark.parametrize("data", [b".a\r\n.b\r\nc.\r\n..d", b"x\r\n.\r\n", b"abc", b"\r\n.\r\n.", b"\n.x"])
def test_the_pipelined_payload_is_dot_stuffed_exactly_as_smtplib_does(data: bytes) -> None:
    expected = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    expected += b"" if expected.endswith(b"\r\n") else b"\r\n"
    assert _payload(data) == expected + b".\r\n"


SMTP_SINK = Path(POSTFIX_SINK)


@pytest.mark.parametrize(("delay", "connections"), [(".:1", 1), ("rcpt:1", 2)])
def test_a_server_that_answers_pipelined_commands_out_of_order_is_not_misread(delay: str, connections: int) -> None:
    """postfix's smtp-sink -W delays one reply but answers what was pipelined behind it at once.
    Delaying the end of data: waiting for its reply before the next MAIL keeps every reply with
    its message (one round trip per message counted unsent messages as sent). Delaying RCPT:
    the server runs DATA first ("503 need RCPT"), so the transport notices the impossible
    replies, stops pipelining with this server and sends the message again on a new connection."""
    if not SMTP_SINK.exists():
        unavailable("smtp-sink", "apt-get install postfix (make test does this as root)")
    with postfix_sink("-W", delay) as port:
        transport = SmtpTransport("127.0.0.1", port, tls="none", timeout=5)
        results = transport.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
        transport.close()
    assert [r.status for r in results] == ["sent"] * 3
    assert all(r.detail.startswith("250 2.0.0") for r in results), results  # end-of-data replies
    assert transport.connections_opened == connections
    assert transport.pipelining is (connections == 1)
