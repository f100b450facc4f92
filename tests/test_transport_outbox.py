"""The outbox transport (atomic .eml files) and choosing a transport from CADENCE_EMAIL_URL."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.errors import ConfigError
from cadence.transports.outbox import OutboxTransport, outbox_filename
from cadence.transports.ratelimit import LocalTokenBucket, RateLimitedTransport
from cadence.transports.registry import open_transport, redact
from cadence.transports.smtp import SmtpTransport


def pair(n: int, body: str = "Hello\n") -> tuple[OutgoingMessage, bytes]:
    msg = OutgoingMessage(
        sender=Address("news@example.com"),
        to=Address(f"r{n}@example.org"),
        subject=f"#{n}",
        html="",
        text=body,
        message_id=make_message_id(n, "secret", "example.com"),
    )
    return msg, build_mime(msg, date=datetime(2024, 5, 1, tzinfo=UTC))


def test_each_message_becomes_one_eml_file_named_after_its_message_id(tmp_path: Path) -> None:
    transport = open_transport("outbox://", data_dir=tmp_path, redis_url=None)
    pairs = [pair(1), pair(2)]
    results = transport.send_many(pairs)
    assert [r.status for r in results] == ["sent", "sent"]
    for (msg, data), result in zip(pairs, results, strict=True):
        path = tmp_path / "outbox" / outbox_filename(msg.message_id)
        assert path.read_bytes() == data and result.detail == str(path)
    assert outbox_filename("<d1.ab12@example.com>") == "d1.ab12@example.com.eml"
    assert outbox_filename("<../../etc/passwd@x>") == "_.._etc_passwd@x.eml"


def test_sending_a_delivery_again_rewrites_its_file_instead_of_duplicating_it(tmp_path: Path) -> None:
    transport = OutboxTransport(tmp_path / "box")
    transport.send_many([pair(1, "first\n")])
    transport.send_many([pair(1, "second\n")])
    [only] = list((tmp_path / "box").iterdir())
    assert only.read_bytes() == pair(1, "second\n")[1]


def test_an_absolute_outbox_path_in_the_url(tmp_path: Path) -> None:
    transport = open_transport(f"outbox://{tmp_path}/elsewhere?fsync=0", data_dir=tmp_path / "unused", redis_url=None)
    assert isinstance(transport, OutboxTransport) and transport.directory == tmp_path / "elsewhere"
    assert transport.fsync is False
    transport.send_many([pair(3)])
    assert len(list((tmp_path / "elsewhere").glob("*.eml"))) == 1


def _write_forever(directory: str, started: Any) -> None:
    transport = OutboxTransport(Path(directory))
    msg, data = pair(0, "x" * 4_000_000)  # a few MB, so a kill often lands mid-write
    n = 0
    while True:
        transport.send_many([(replace(msg, message_id=make_message_id(n, "secret", "example.com")), data)])
        n += 1
        started.set()


def test_a_killed_writer_never_leaves_a_partial_eml(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    complete = pair(0, "x" * 4_000_000)[1]
    torn = 0
    for attempt in range(6):
        directory = tmp_path / f"box{attempt}"
        started = context.Event()
        writer = context.Process(target=_write_forever, args=(str(directory), started))
        writer.start()
        assert started.wait(timeout=60)
        time.sleep(random.uniform(0.0, 0.05))
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)  # a crash: no cleanup code runs
        writer.join()
        files = sorted(directory.iterdir())
        emls = [f for f in files if f.suffix == ".eml"]
        assert emls
        for eml in emls:  # every visible message is whole (same length as a complete one)
            assert len(eml.read_bytes()) == len(complete), eml
        leftovers = [f for f in files if f not in emls]
        assert all(f.name.startswith(".") and f.name.endswith(".tmp") for f in leftovers)
        torn += bool(leftovers)
    assert torn, "no kill landed mid-write: the test did not exercise the crash"


def test_urls_pick_the_transport_and_reject_what_they_do_not_understand(tmp_path: Path) -> None:
    assert isinstance(
        open_transport("smtp://mail.example.com:2525?tls=none", data_dir=tmp_path, redis_url=None), SmtpTransport
    )
    paced = open_transport("outbox://?rate=14/s", data_dir=tmp_path, redis_url=None)
    assert isinstance(paced, RateLimitedTransport) and isinstance(paced.limiter, LocalTokenBucket)
    assert paced.needs_mime is True
    for bad, reason in [
        ("gopher://x", "unknown scheme"),
        ("smtp://user:hunter2@mail.example.com?tls=starttls&colour=blue", "unsupported option"),
        ("smtp://user:hunter2@mail.example.com?tls=maybe", "tls='maybe'"),
        ("smtp://user:hunter2@mail.example.com?tls=none&tls=none", "given twice"),
        ("smtps://user:hunter2@mail.example.com?tls=none", "implicit TLS"),
        ("postmark://@", "server token"),
        ("outbox://relative", "no host"),
        ("outbox://?fsync=maybe", "fsync"),
        ("mailgun://key@example.com?base_url=ftp://x", "base_url"),
    ]:
        with pytest.raises(ConfigError, match=reason) as refused:
            open_transport(bad, data_dir=tmp_path, redis_url=None)
        assert str(refused.value).startswith("CADENCE_EMAIL_URL: ")
        assert "hunter2" not in str(refused.value)


def test_redact_hides_credentials() -> None:
    assert redact("smtp://user:pw@host:25?tls=none") == "smtp://***@host:25?tls=none"
    assert redact("postmark://TOKEN@") == "postmark://***@"
    assert redact("outbox://") == "outbox://"
