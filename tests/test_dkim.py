"""DkimSigner: verified by dkimpy (with a stub DNS answer) on the bytes an SMTP server received."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed
from dkim.util import parse_tag_value

from cadence.core.dkim import DEFAULT_SIGNED_HEADERS, DkimSigner, parse_header_block, relaxed_body, relaxed_header
from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.errors import ConfigError
from cadence.transports.smtp import SmtpTransport
from tests.support.smtpd import SmtpSink

DATE = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
SELECTOR, DOMAIN = "cad2024", "example.com"
Resolver = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def signer(key_pem: bytes) -> DkimSigner:
    return DkimSigner(key_pem, SELECTOR, DOMAIN)


@pytest.fixture(scope="module")
def dns(key_pem: bytes) -> Resolver:
    """A stub resolver answering the selector's TXT record, as published in DNS (RFC 6376 §3.6.2)."""
    public = serialization.load_pem_private_key(key_pem, password=None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def message(**changes: object) -> OutgoingMessage:
    base = OutgoingMessage(
        sender=Address("news@example.com", "Zoë from Trail News"),
        to=Address("bob@example.org", "Bob"),
        subject="Grüße: your   first\tstep",
        html="<p>Hello   <b>Bob</b>\t </p>\n" * 400,
        text="Hello Bob  \n\n\n",
        message_id=make_message_id(7, "secret", DOMAIN),
        list_id="Trail News <trail-news.example.com>",
        list_unsubscribe_url="https://example.com/u/abc",
        list_unsubscribe_mailto="mailto:unsubscribe@example.com?subject=abc",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def tags(signed: bytes) -> dict[bytes, bytes]:
    header = signed.split(b"\r\n\r\n", 1)[0]
    start = header.index(b"DKIM-Signature:") + len(b"DKIM-Signature:")
    value = header[start:].split(b"\r\nDate:", 1)[0].replace(b"\r\n", b"")
    parsed: dict[bytes, bytes] = parse_tag_value(value)
    return parsed


def test_a_signed_message_verifies_on_the_bytes_the_smtp_server_received(
    signer: DkimSigner, dns: Resolver, sink: SmtpSink
) -> None:
    msg = message()
    transport = SmtpTransport(sink.host, sink.port, tls="none")
    try:
        [result] = transport.send_many([(msg, build_mime(msg, date=DATE, signer=signer))])
    finally:
        transport.close()
    assert result.status == "sent"
    [received] = sink.wait_for(1)
    assert received.data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;")
    assert dkim.verify(received.data, dnsfunc=dns)


def test_h_covers_the_one_click_headers(signer: DkimSigner) -> None:
    signed = build_mime(message(), date=DATE, signer=signer)
    fields = tags(signed)
    signed_headers = [h.strip() for h in fields[b"h"].split(b":")]
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"list-id"):
        assert name in signed_headers
    assert b"list-unsubscribe" in signed_headers
    assert b"list-unsubscribe-post" in signed_headers  # RFC 8058 §4; not in dkimpy's default
    assert fields[b"t"] == str(int(DATE.timestamp())).encode()
    assert [h.encode() for h in DEFAULT_SIGNED_HEADERS] == signed_headers


def test_tampering_with_signed_headers_breaks_verification(signer: DkimSigner, dns: Resolver) -> None:
    signed = build_mime(message(), date=DATE, signer=signer)
    assert dkim.verify(signed, dnsfunc=dns)
    changed_url = signed.replace(b"<https://example.com/u/abc>", b"<https://evil.test/u/abc>")
    assert changed_url != signed and not dkim.verify(changed_url, dnsfunc=dns)
    second_from = signed.replace(b"\r\nDate:", b"\r\nFrom: evil@evil.test\r\nDate:", 1)
    assert not dkim.verify(second_from, dnsfunc=dns)
    changed_body = signed.replace(b"Hello", b"Hallo", 1)
    assert not dkim.verify(changed_body, dnsfunc=dns)


def test_adding_one_click_to_a_message_signed_without_it_breaks_verification(signer: DkimSigner, dns: Resolver) -> None:
    signed = build_mime(message(list_unsubscribe_url=None), date=DATE, signer=signer)
    assert b"List-Unsubscribe-Post" not in signed and dkim.verify(signed, dnsfunc=dns)
    added = signed.replace(
        b"\r\nMIME-Version:", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version:"
    )
    assert not dkim.verify(added, dnsfunc=dns)


def test_relaxed_canonicalization_still_verifies_after_harmless_rewrapping(signer: DkimSigner, dns: Resolver) -> None:
    signed = build_mime(message(), date=DATE, signer=signer)
    # relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4) tolerates header refolding and trailing blanks
    rewrapped = signed.replace(b"\r\nSubject: ", b"\r\nSubject:\r\n\t ", 1) + b"\r\n\r\n"
    assert dkim.verify(rewrapped, dnsfunc=dns)


def test_our_signature_equals_dkimpys_own_for_the_same_input(
    signer: DkimSigner, key_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    unsigned = build_mime(message(), date=DATE)
    ours = signer.sign(unsigned, timestamp=1714548600)
    monkeypatch.setattr(dkim.time, "time", lambda: 1714548600.25)  # dkimpy reads the clock for t=
    theirs = dkim.sign(
        unsigned,
        SELECTOR.encode(),
        DOMAIN.encode(),
        key_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.encode() for h in DEFAULT_SIGNED_HEADERS],
    )
    assert ours == theirs


def test_build_mime_signs_exactly_what_sign_would_on_its_output(signer: DkimSigner) -> None:
    for msg in (message(), message(html=""), message(text="")):
        unsigned = build_mime(msg, date=DATE)
        signed = build_mime(msg, date=DATE, signer=signer)
        assert signed == signer.sign(unsigned, timestamp=int(DATE.timestamp())) + unsigned


def test_without_a_timestamp_there_is_no_t_tag_and_it_still_verifies(signer: DkimSigner, dns: Resolver) -> None:
    unsigned = build_mime(message(), date=DATE)
    signed = signer.sign(unsigned) + unsigned
    assert b"t" not in tags(signed)
    assert dkim.verify(signed, dnsfunc=dns)


def test_relaxed_body_canonicalization_matches_dkimpy_on_adversarial_whitespace() -> None:
    rng = random.Random(6376)
    alphabet = [b" ", b"\t", b"\r\n", b"a", b"=", b"  ", b"\t \t", b" \r\n", b"\r\n\r\n"]
    samples = [b"", b"\r\n", b"\r\n\r\n", b" \r\n", b"a", b"a \t ", b" \t\r\n\t \r\n"]
    samples += [b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    for body in samples:
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


def test_relaxed_header_canonicalization_matches_dkimpy_on_adversarial_whitespace() -> None:
    rng = random.Random(8463)
    alphabet = [b" ", b"\t", b"\r\n", b"\n", b"\r", b"a", b":", b"  ", b"\r\n\t", b"\r\r\n\n", b"\x0b"]
    names = [b"Subject", b"LIST-Unsubscribe", b"x", b"To \t"]
    for _ in range(3000):
        name = rng.choice(names)
        value = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        [(cname, cvalue)] = Relaxed.canonicalize_headers([(name, value)])
        assert relaxed_header(name, value) == cname + b":" + cvalue, (name, value)


def test_header_blocks_are_parsed_exactly_as_dkimpy_parses_them() -> None:
    rng = random.Random(5322)
    lines = [
        b"Subject: a  b", b"To:x", b" folded", b"\tfolded", b"From x y", b"X-A:", b"Bad Name: v", b":empty",
        b"a:b:c", b"", b"nocolon", b"D\xc3\xa9j\xc3\xa0: v", b"Lone\rCR: v", b"  ",
    ]  # fmt: skip
    blocks = [build_mime(message(), date=DATE).split(b"\r\n\r\n", 1)[0] + b"\r\n"]
    for _ in range(3000):
        chosen = [rng.choice(lines) for _ in range(rng.randint(1, 6))]
        blocks.append(rng.choice([b"\r\n", b"\n"]).join(chosen) + rng.choice([b"\r\n", b"\n", b""]))
    for block in blocks:
        try:
            expected = dkim.rfc822_parse(block + b"\r\n")[0]
        except (dkim.MessageFormatError, IndexError) as exc:
            with pytest.raises(type(exc)):
                parse_header_block(block)
            continue
        assert parse_header_block(block) == expected, block


@pytest.mark.parametrize("timestamp", [None, 0, 1714548600, 10**12])
def test_the_remembered_field_layout_gives_the_field_dkimpy_folding_gives(
    signer: DkimSigner, timestamp: int | None
) -> None:
    rng = random.Random(timestamp)
    for domain, selector in ((DOMAIN, SELECTOR), ("a" * 60 + ".example", "s" * 30)):
        one = DkimSigner(
            signer._key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            selector,
            domain,
        )
        for _ in range(5):
            bodyhash = base64.b64encode(rng.randbytes(32))
            headers = rng.randbytes(80)
            assert one.signature_header(headers, bodyhash, timestamp) == one._signature_header_by_folding(
                headers, bodyhash, timestamp
            )
        assert one._layouts[timestamp].usable


def test_keys_that_cannot_sign_rsa_sha256_are_configuration_errors(key_pem: bytes) -> None:
    with pytest.raises(ConfigError, match="PEM"):
        DkimSigner(b"not a key", SELECTOR, DOMAIN)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="RSA"):
        DkimSigner(ec_pem, SELECTOR, DOMAIN)
    with pytest.raises(ConfigError, match="From"):
        DkimSigner(key_pem, SELECTOR, DOMAIN, headers=("to", "subject"))
