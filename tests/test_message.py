"""build_mime: what Python's own parser reads back, line limits, encodings, injection refusal."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest

from cadence.core.message import Address, OutgoingMessage, build_mime, format_address, make_message_id
from cadence.errors import InputError
from cadence.transports.smtp import SmtpTransport
from tests.support.smtpd import SmtpSink

DATE = datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))


def make(**changes: Any) -> OutgoingMessage:
    base = OutgoingMessage(
        sender=Address("news@example.com", "Trail News"),
        to=Address("bob@example.org", "Bob"),
        subject="Your first step",
        html="<p>Hello <b>Bob</b></p>\n",
        text="Hello Bob\n",
        message_id=make_message_id(7, "secret", "example.com"),
        reply_to="coach@example.com",
        list_id="Trail News <trail-news.example.com>",
        list_unsubscribe_url="https://example.com/u/abc",
        list_unsubscribe_mailto="mailto:unsubscribe@example.com?subject=abc",
        extra_headers=(("X-Campaign", "lower-back-pain"),),
    )
    return replace(base, **changes)


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def assert_no_defects(parsed: EmailMessage) -> None:
    for part in parsed.walk():
        assert part.defects == [], (part.get_content_type(), part.defects)
        for name, value in part.items():
            assert getattr(value, "defects", ()) == (), (name, value.defects)


def content(part: Any) -> str:
    """Decoded text with line ends as Python reads them from CRLF bytes, normalised to LF."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def lines(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    return raw[:-2].split(b"\r\n")


def test_python_reads_the_message_back_without_defects_and_with_every_header() -> None:
    raw = build_mime(make(), date=DATE)
    parsed = parse(raw)
    assert_no_defects(parsed)
    assert parsed["Date"].datetime == DATE
    assert parsed["From"].addresses[0].display_name == "Trail News"
    assert parsed["From"].addresses[0].addr_spec == "news@example.com"
    assert str(parsed["To"]) == "Bob <bob@example.org>"
    assert str(parsed["Reply-To"]) == "coach@example.com"
    assert parsed["Subject"] == "Your first step"
    assert parsed["Message-ID"] == make_message_id(7, "secret", "example.com")
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["List-Id"] == "Trail News <trail-news.example.com>"
    assert parsed["List-Unsubscribe"] == ("<https://example.com/u/abc>, <mailto:unsubscribe@example.com?subject=abc>")
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Campaign"] == "lower-back-pain"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content_charset() == html.get_content_charset() == "utf-8"
    assert content(plain) == "Hello Bob\n"
    assert content(html) == "<p>Hello <b>Bob</b></p>\n"


def test_output_is_reproducible_for_the_same_input() -> None:
    assert build_mime(make(), date=DATE) == build_mime(make(), date=DATE)


def test_one_click_header_only_with_an_https_url() -> None:
    http = parse(build_mime(make(list_unsubscribe_url="http://example.com/u/abc"), date=DATE))
    assert http["List-Unsubscribe"].startswith("<http://example.com/u/abc>")
    assert "List-Unsubscribe-Post" not in http
    mailto_only = parse(build_mime(make(list_unsubscribe_url=None), date=DATE))
    assert mailto_only["List-Unsubscribe"] == "<mailto:unsubscribe@example.com?subject=abc>"
    assert "List-Unsubscribe-Post" not in mailto_only
    neither = parse(build_mime(make(list_unsubscribe_url=None, list_unsubscribe_mailto=None), date=DATE))
    assert "List-Unsubscribe" not in neither


def test_long_lines_are_encoded_and_folded_within_998_octets() -> None:
    one_long_line = "<div>" + "word " * 3000 + "x" * 2500 + "</div>"  # 17 KB without a newline
    subject = "A subject " * 40 + "Z" * 1200  # folds at spaces, then one 1200-char word
    msg = make(
        html=one_long_line,
        text="t" * 5000,
        subject=subject,
        sender=Address("news@example.com", "A very long display name " * 8),
        list_unsubscribe_url="https://example.com/unsubscribe/" + "a" * 900,
    )
    raw = build_mime(msg, date=DATE)
    assert max(map(len, lines(raw))) <= 998
    parsed = parse(raw)
    assert_no_defects(parsed)
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "A very long display name " * 8
    plain, html = parsed.iter_parts()
    assert content(html) == one_long_line
    assert content(plain) == "t" * 5000
    # headers other than the unbreakable URL fold at 78 (RFC 5322 §2.1.1 SHOULD)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if b"unsubscribe/aaa" not in line)


def test_ascii_parts_with_short_lines_go_7bit_and_anything_else_is_encoded() -> None:
    """7bit needs ASCII, no NUL and lines within 998 octets (RFC 2045 §2.7, RFC 5322 §2.1.1);
    it saves the quoted-printable pass over the 17 KB HTML part of every email."""
    html = '<p style="margin:0">Hello Jos&#233;</p>\n.leading dot\n' + "<i>x</i>" * 100 + "\n"
    cases = {
        "7bit": (html, "ascii text\n"),
        "quoted-printable": ("<p>" + "x" * 991 + "</p>", "Hello José\n"),  # too long / not ASCII
    }
    for cte, (html_part, text_part) in cases.items():
        raw = build_mime(make(html=html_part, text=text_part), date=DATE)
        assert max(map(len, lines(raw))) <= 998
        parsed = parse(raw)
        assert_no_defects(parsed)
        plain, rich = parsed.iter_parts()
        assert rich["Content-Transfer-Encoding"] == cte
        assert content(rich) == html_part and content(plain) == text_part
    raw = build_mime(make(html=html, text="ascii text\n"), date=DATE)
    assert b"\r\n.leading dot\r\n" in raw  # as is: dot-stuffing is SMTP's job (RFC 5321 §4.5.2)
    assert parse(raw).get_body(("plain",))["Content-Transfer-Encoding"] == "7bit"  # type: ignore[index]


def test_non_ascii_names_and_subjects_are_rfc2047_encoded_and_round_trip() -> None:
    msg = make(
        sender=Address("news@example.com", "Zoë Müller, Ph.D."),
        to=Address("bob@example.org", "山田 太郎"),
        subject="Grüße — 你好 🏃 " * 6,
        text="Grüße 🏃\n",
        html="<p>Grüße 🏃</p>",
    )
    raw = build_mime(msg, date=DATE)
    raw.decode("ascii")  # 7-bit clean: no SMTPUTF8/8BITMIME needed anywhere on the path
    parsed = parse(raw)
    assert_no_defects(parsed)
    assert parsed["From"].addresses[0].display_name == "Zoë Müller, Ph.D."
    assert parsed["To"].addresses[0].display_name == "山田 太郎"
    assert parsed["Subject"] == "Grüße — 你好 🏃 " * 6
    assert re.search(rb"^Subject: =\?utf-8\?b\?", raw, re.M)
    assert content(parsed.get_body(("plain",))) == "Grüße 🏃\n"


def test_ascii_names_with_specials_are_quoted() -> None:
    msg = make(to=Address("bob@example.org", 'Bob "The Builder", Jr.'))
    parsed = parse(build_mime(msg, date=DATE))
    assert parsed["To"].addresses[0].display_name == 'Bob "The Builder", Jr.'
    assert len(parsed["To"].addresses) == 1
    assert format_address(msg.to) == '"Bob \\"The Builder\\", Jr." <bob@example.org>'


def test_mostly_non_latin_text_uses_base64_and_round_trips() -> None:
    text = "Привет, это письмо о беге по тропам.\n" * 200
    raw = build_mime(make(text=text, html=""), date=DATE)
    parsed = parse(raw)
    assert_no_defects(parsed)
    assert parsed.get_content_type() == "text/plain"
    assert parsed["Content-Transfer-Encoding"] == "base64"
    assert content(parsed) == text
    assert max(map(len, lines(raw))) <= 78


def test_a_message_needs_a_body_and_an_aware_date() -> None:
    with pytest.raises(InputError, match="neither a text nor an HTML body"):
        build_mime(make(text="", html=""), date=DATE)
    with pytest.raises(InputError, match="Date"):
        build_mime(make(), date=datetime(2024, 5, 1, 9, 30))


def test_message_id_is_stable_per_delivery_and_unguessable_without_the_secret() -> None:
    first = make_message_id(41, "secret", "example.com")
    assert first == make_message_id(41, "secret", "example.com")
    assert first != make_message_id(42, "secret", "example.com")
    assert first != make_message_id(41, "other", "example.com")
    assert re.fullmatch(r"<d41\.[0-9a-f]{16}@example\.com>", first)
    assert make_message_id(1, "s", "bücher.example").endswith("@xn--bcher-kva.example>")


INJECTIONS = ["x\r\nBcc: evil@evil.test", "x\nBcc: evil@evil.test", "x\rBcc: evil@evil.test", "x\x00y"]
FIELDS: dict[str, Any] = {
    "From name": lambda v: {"sender": Address("news@example.com", v)},
    "From": lambda v: {"sender": Address("news@example.com" + v)},
    "To name": lambda v: {"to": Address("bob@example.org", v)},
    "To": lambda v: {"to": Address("bob@example.org" + v)},
    "Subject": lambda v: {"subject": v},
    "Reply-To": lambda v: {"reply_to": "coach@example.com" + v},
    "List-Id": lambda v: {"list_id": "Trail " + v + " <trail.example.com>"},
    "List-Unsubscribe": lambda v: {"list_unsubscribe_url": "https://example.com/u" + v},
    "Message-ID": lambda v: {"message_id": "<a@b" + v + ">"},
    "extra header name": lambda v: {"extra_headers": (("X-A" + v, "1"),)},
    "X-Campaign": lambda v: {"extra_headers": (("X-Campaign", v),)},
}


@pytest.mark.parametrize("injection", INJECTIONS, ids=["crlf", "lf", "cr", "nul"])
@pytest.mark.parametrize("field_name", list(FIELDS))
def test_cr_lf_nul_in_any_header_value_is_refused_naming_the_field(field_name: str, injection: str) -> None:
    with pytest.raises(InputError) as refused:
        build_mime(make(**FIELDS[field_name](injection)), date=DATE)
    assert str(refused.value).startswith(field_name)


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.org, evil@evil.test",
        "bob@example.org>, <evil@evil.test",
        "Bob <bob@example.org>",
        "bob@example.org evil@evil.test",
        '"quoted"@example.org',
        "bob@[127.0.0.1]",
        "bob",
        "bob@exa_mple.org",
        "bøb@example.org",
    ],
)
def test_an_address_must_be_a_single_plain_addr_spec(address: str) -> None:
    with pytest.raises(InputError, match=r"^To"):
        build_mime(make(to=Address(address)), date=DATE)


def test_extra_headers_cannot_add_recipients_or_override_ours() -> None:
    for name in ("Bcc", "cc", "To", "Resent-To", "Subject", "DKIM-Signature", "List-Unsubscribe-Post"):
        with pytest.raises(InputError, match="refused"):
            build_mime(make(extra_headers=((name, "evil@evil.test"),)), date=DATE)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def test_an_injected_bcc_never_adds_a_recipient(sink: SmtpSink) -> None:
    transport = SmtpTransport(sink.host, sink.port, tls="none")
    # Attempts with line breaks are refused before anything is sent ...
    for field_name, change in FIELDS.items():
        with pytest.raises(InputError):
            build_mime(make(**change("\r\nBcc: evil@evil.test")), date=DATE)
        assert field_name
    # ... and look-alikes without line breaks stay inert text inside one header.
    inert = make(
        sender=Address("news@example.com", "News, Bcc: evil@evil.test"),
        to=Address("bob@example.org", "Bob <evil@evil.test>, Bcc: evil@evil.test"),
        subject="Hi Bcc: evil@evil.test, Cc: evil2@evil.test",
    )
    try:
        [result] = transport.send_many([(inert, build_mime(inert, date=DATE))])
    finally:
        transport.close()
    assert result.status == "sent"
    [received] = sink.wait_for(1)
    assert received.rcpt_tos == ("bob@example.org",)
    assert [rcpt for rcpt, _ in sink.rcpt_attempts] == ["bob@example.org"]
    parsed = parse(received.data)
    assert_no_defects(parsed)
    assert "Bcc" not in parsed and "Cc" not in parsed
    assert [a.addr_spec for a in parsed["To"].addresses] == ["bob@example.org"]
    assert parsed["To"].addresses[0].display_name == "Bob <evil@evil.test>, Bcc: evil@evil.test"
    assert parsed["Subject"] == "Hi Bcc: evil@evil.test, Cc: evil2@evil.test"


def test_the_stdlib_builder_would_have_written_the_same_readable_message() -> None:
    """A cross-check: our output and EmailMessage's agree on what a reader sees."""
    msg = make(subject="Grüße", to=Address("bob@example.org", "Zoë"))
    ours = parse(build_mime(msg, date=DATE))
    theirs = EmailMessage()
    theirs["Subject"] = msg.subject
    theirs["To"] = f"Zoë <{msg.to.email}>"
    theirs.set_content(msg.text)
    theirs.add_alternative(msg.html, subtype="html")
    assert ours["Subject"] == theirs["Subject"]
    assert str(ours["To"]) == str(theirs["To"])
    assert [content(p) for p in ours.iter_parts()] == [content(p) for p in theirs.iter_parts()]
    assert datetime(2024, 5, 1, 7, 30, tzinfo=UTC) == ours["Date"].datetime
