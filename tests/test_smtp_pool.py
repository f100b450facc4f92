"""``smtp://...&connections=N``: several connections of one process against a real SMTP server
(aiosmtpd). Every message arrives once, results come back in order, refusals are reported with
their index in the whole group, and an unreachable server is an error only when nothing went out."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cadence.errors import ConfigError, TransientSendError
from cadence.transports.base import SendResult
from cadence.transports.registry import open_transport
from cadence.transports.smtp import SmtpTransport
from cadence.transports.smtp_pool import SmtpPool, _split
from tests.support.smtpd import SmtpSink
from tests.test_transport_smtp import batch


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def pool_for(sink: SmtpSink, connections: int) -> SmtpPool:
    transport = open_transport(
        f"smtp://{sink.host}:{sink.port}?tls=none&timeout=5&connections={connections}",
        data_dir=Path("/nonexistent"),
        redis_url=None,
    )
    assert isinstance(transport, SmtpPool)
    return transport


def test_every_message_arrives_once_over_several_connections_and_results_keep_their_order(sink: SmtpSink) -> None:
    pool = pool_for(sink, 3)
    before = len(sink.messages)
    try:
        rcpts = [f"p{i}@example.org" for i in range(20)]
        first = pool.send_many(batch(*rcpts[:10]))
        second = pool.send_many(batch(*rcpts[10:], start=10))  # the same connections, reused
    finally:
        pool.close()
    assert [r.status for r in first + second] == ["sent"] * 20
    received = sink.messages[before:]
    assert Counter(m.rcpt_tos[0] for m in received) == Counter(rcpts)  # nothing lost, nothing twice
    assert len({m.connection for m in received}) == 3
    assert pool.connections_opened == 3
    # Each message went to its own recipient: the subject carries its index in the batch.
    for message in received:
        index = int(message.rcpt_tos[0][1:].split("@")[0])
        assert f"Subject: Message {index}".encode() in message.data


def test_refusals_are_reported_once_with_their_index_in_the_whole_group(sink: SmtpSink) -> None:
    sink.reply("gone4@example.org", "550 5.1.1 No such user")
    sink.reply("gone9@example.org", "550 5.1.1 No such user")
    sink.reply("busy6@example.org", "451 4.7.1 Try again later", times=1)
    rcpts = [f"ok{i}@example.org" for i in range(12)]
    rcpts[4], rcpts[9], rcpts[6] = "gone4@example.org", "gone9@example.org", "busy6@example.org"
    reported: list[tuple[int, str]] = []
    pool = pool_for(sink, 4)
    try:
        results = pool.send_many(batch(*rcpts), on_refused=lambda i, r: reported.append((i, r.status)))
    finally:
        pool.close()
    statuses = [r.status for r in results]
    assert statuses[4] == statuses[9] == "permanent"
    assert statuses[6] == "transient"
    assert statuses.count("sent") == 9
    assert sorted(reported) == [(4, "permanent"), (9, "permanent")]


def test_a_failing_refusal_hook_is_raised_after_the_other_connections_stop(sink: SmtpSink) -> None:
    sink.reply("refused@example.org", "550 5.1.1 No such user")

    def hook(index: int, result: SendResult) -> None:
        raise RuntimeError("the ledger is gone")

    pool = pool_for(sink, 2)
    try:
        with pytest.raises(RuntimeError, match="the ledger is gone"):
            pool.send_many(batch("a@example.org", "refused@example.org", "b@example.org", "c@example.org"), hook)
        # The pool is still usable afterwards.
        assert [r.status for r in pool.send_many(batch("d@example.org", "e@example.org"))] == ["sent", "sent"]
    finally:
        pool.close()


def test_a_server_nobody_can_reach_is_a_transient_error_not_results() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # nothing listens on it
    pool = SmtpPool([SmtpTransport("127.0.0.1", port, tls="none", timeout=2) for _ in range(3)])
    with pytest.raises(TransientSendError):
        pool.send_many(batch("a@example.org", "b@example.org", "c@example.org"))
    pool.close()
    pool.close()  # twice is fine


def test_a_share_whose_connection_fails_comes_back_transient_while_the_rest_is_sent(sink: SmtpSink) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead = placeholder.getsockname()[1]
    members = [SmtpTransport(sink.host, sink.port, tls="none", timeout=5), SmtpTransport("127.0.0.1", dead, tls="none")]
    pool = SmtpPool(members)
    before = len(sink.messages)
    try:
        results = pool.send_many(batch("x0@example.org", "x1@example.org", "x2@example.org", "x3@example.org"))
    finally:
        pool.close()
    assert [r.status for r in results] == ["sent", "sent", "transient", "transient"]
    assert results[2].detail.startswith("not attempted")
    assert [m.rcpt_tos[0] for m in sink.messages[before:]] == ["x0@example.org", "x1@example.org"]


def test_one_connection_is_the_plain_transport() -> None:
    transport = open_transport("smtp://127.0.0.1:2525?tls=none", data_dir=Path("/nonexistent"), redis_url=None)
    assert type(transport) is SmtpTransport


@pytest.mark.parametrize("value", ["0", "many", "33", "-1", ""])
def test_a_bad_connections_value_is_a_config_error_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"CADENCE_EMAIL_URL: connections=.*expected a whole number from 1 to 32"):
        open_transport(f"smtp://127.0.0.1:2525?tls=none&connections={value}", data_dir=Path("/x"), redis_url=None)


def test_an_unknown_option_is_still_refused_with_a_pool() -> None:
    with pytest.raises(ConfigError, match=r"unsupported option.*nosuch"):
        open_transport("smtp://127.0.0.1:2525?tls=none&connections=2&nosuch=1", data_dir=Path("/x"), redis_url=None)


def test_shares_are_contiguous_and_even() -> None:
    assert _split(0, 4) == [(0, 0)]
    assert _split(1, 4) == [(0, 1)]
    assert _split(3, 4) == [(0, 1), (1, 2), (2, 3)]
    assert _split(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
