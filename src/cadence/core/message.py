"""Build the MIME bytes of one email (RFC 5322, RFC 2045-2049, RFC 8058, RFC 2369/2919).

OWNER: delivery work (issue 4). The dataclasses below are the contract the engine and the
transports share; keep their fields stable.

``build_mime`` is a lean, purpose-built writer rather than :class:`email.message.EmailMessage`:
the stdlib object model costs ~5 ms for a 40 KB newsletter, this costs a few hundred
microseconds (``bench/message.py``). It only ever writes one shape::

    multipart/alternative            (or a single text/plain or text/html part)
      text/plain; charset="utf-8"    quoted-printable, or base64 when that is smaller
      text/html; charset="utf-8"     idem

and it validates everything it writes itself, because the Python 3.11.7 we run predates the
CVE-2024-6923 fix (the stdlib generator did not refuse CR/LF in header values). Every header
value is checked for CR, LF, NUL and other controls, every address must be one plain addr-spec,
and no line exceeds 998 octets (RFC 5322 §2.1.1). ``email.message_from_bytes(...,
policy=email.policy.default)`` reads the result back with no defects (tests/test_message.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from cadence.errors import InputError

if TYPE_CHECKING:
    from cadence.core.dkim import DkimSigner, DkimSigners

__all__ = [
    "Address",
    "OutgoingMessage",
    "build_mime",
    "check_header_text",
    "format_address",
    "make_message_id",
    "provider_headers",
    "validate_addr_spec",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: display name (may be empty) and addr-spec."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """Everything a transport needs to send one email to one recipient.

    ``message_id`` is stable per delivery (``<d{delivery_id}.{hash}@{sender domain}>``), so a
    message sent twice after a crash can be recognised as a duplicate by anyone who sees both.
    ``list_unsubscribe_url`` is the RFC 8058 one-click HTTPS URL; ``list_unsubscribe_mailto``
    the mailto: fallback (RFC 2369). ``metadata`` is passed to HTTP providers that support it
    (delivery id, campaign, step) so their webhooks can be mapped back to a delivery.
    """

    sender: Address
    to: Address
    subject: str
    html: str
    text: str
    message_id: str
    reply_to: str | None = None
    list_id: str | None = None
    list_unsubscribe_url: str | None = None
    list_unsubscribe_mailto: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


# --- validation -------------------------------------------------------------------------------

# CR, LF and NUL are the injection vectors; the other C0/C1 controls, DEL and the Unicode line
# separators are never legitimate in a header either (RFC 5322 §2.2: printable US-ASCII and WSP).
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
# RFC 5322 §3.2.3 atext; a dot-atom local part (quoted local parts are refused: unsupported).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_LOCAL_PART = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PHRASE_ATOMS = re.compile(rf"[{_ATEXT}]+(?: [{_ATEXT}]+)*")
_MESSAGE_ID = re.compile(rf"<[{_ATEXT}.]+@[{_ATEXT}.]+>")
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 §2.2 ftext: printable ASCII except ":"
_LIST_ID = re.compile(rf"[{_ATEXT}.]+\.[{_ATEXT}.]+")  # RFC 2919 §2: list-label "." list-id-namespace
# Headers build_mime writes itself, and recipient/trace headers no caller may add.
_RESERVED = frozenset(
    (
        "from", "to", "cc", "bcc", "sender", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "list-id", "list-unsubscribe",
        "list-unsubscribe-post", "dkim-signature", "return-path", "received",
    )
)  # fmt: skip

ONE_CLICK = "List-Unsubscribe=One-Click"  # RFC 8058 §3.1, the only value defined
_MAX_LINE = 998  # RFC 5322 §2.1.1, octets excluding CRLF
_FOLD_AT = 78  # RFC 5322 §2.1.1 "SHOULD"
# RFC 2047 §2: an encoded-word is at most 75 characters. "=?utf-8?b?" + 56 base64 chars + "?="
# = 68, so a folded continuation line (" " + word) stays under 78 even after "Subject: ".
_EW_CHUNK = 42


def check_header_text(field_name: str, value: str) -> None:
    """Refuse text that must never reach a header (CR, LF, NUL, other controls); InputError."""
    if _FORBIDDEN.search(value):
        raise InputError(f"{field_name}: contains CR, LF, NUL or another control character; refused (header injection)")


@lru_cache(maxsize=4096)
def validate_addr_spec(field_name: str, email: str) -> str:
    """Return ``email`` as one ASCII addr-spec (IDNA domain) or raise InputError naming the field.

    Only ``local@domain`` with a dot-atom local part is accepted: no display name, no angle
    brackets, no commas, no whitespace, so nothing smuggled in the address can become a second
    recipient. A non-ASCII local part would need SMTPUTF8 (RFC 6531), which we do not support.
    """
    check_header_text(field_name, email)
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise InputError(f"{field_name}: {email!r} is not an email address (local@domain)")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InputError(f"{field_name}: invalid internationalised domain in {email!r}") from exc
    if not local.isascii():
        raise InputError(f"{field_name}: non-ASCII local part in {email!r} needs SMTPUTF8 (unsupported)")
    if not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        raise InputError(f"{field_name}: {email!r} is not a single plain address (local@domain)")
    # RFC 5321 §4.5.3.1.1 and .3: local part <= 64 octets, path <= 256 including "<>".
    if len(local) > 64 or len(local) + 1 + len(domain) > 254:
        raise InputError(f"{field_name}: {email!r} is too long")
    return f"{local}@{domain}"


# --- header encoding --------------------------------------------------------------------------


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B encoded-words, each holding whole UTF-8 characters (§5 rule 3)."""
    data = text.encode("utf-8")
    words: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + _EW_CHUNK, len(data))
        while end < len(data) and 0x80 <= data[end] < 0xC0:  # never split a character
            end -= 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode() + "?=")
        start = end
    return words


def _phrase(field_name: str, name: str) -> list[str]:
    """A display name as phrase tokens (RFC 5322 §3.2.5): atoms, one quoted-string, or
    encoded-words when non-ASCII (RFC 2047 §5 rule 3)."""
    check_header_text(field_name, name)
    if not name.isascii() or "=?" in name:  # "=?" could be misread as an encoded-word
        return _encoded_words(name)
    if _PHRASE_ATOMS.fullmatch(name):
        return name.split(" ")
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')  # RFC 5322 §3.2.4 quoted-pair
    # FWS may appear inside a quoted-string (§3.2.4), so long names still fold at their spaces.
    return f'"{escaped}"'.split(" ")


def _fold(name: str, tokens: list[str], separators: list[str] | None = None) -> str:
    """``Name: tok tok ...`` with CRLF+SP folds before tokens once a line passes 78 chars.

    ``separators[i]`` is what goes before ``tokens[i]`` (default a space); folding turns
    ``" "`` into ``"\\r\\n "``, which unfolds back to the same space (RFC 5322 §2.2.3).
    """
    unfolded = " " + " ".join(tokens) if separators is None else "".join(map(str.__add__, separators, tokens))
    if len(name) + 1 + len(unfolded) <= _FOLD_AT:  # the usual case: it fits on one line
        return f"{name}:{unfolded}\r\n"
    out = [name, ":"]
    line = len(name) + 1
    for i, token in enumerate(tokens):
        sep = " " if separators is None else separators[i]
        if token and line + len(sep) + len(token) > _FOLD_AT and i > 0 and sep.endswith(" "):
            out.append(sep[:-1] + "\r\n ")
            line = 1
        else:
            out.append(sep)
            line += len(sep)
        out.append(token)
        line += len(token)
        if line > _MAX_LINE:
            raise InputError(f"{name}: a word is longer than {_MAX_LINE} characters (RFC 5322 §2.1.1)")
    out.append("\r\n")
    return "".join(out)


@lru_cache(maxsize=1024)  # a subject is usually the same for a whole variant
def _unstructured(name: str, value: str) -> str:
    """An unstructured header (Subject, extra headers): folded ASCII, else encoded-words."""
    check_header_text(name, value)
    if not value:
        return f"{name}:\r\n"
    tokens = value.split(" ")
    if value.isascii() and "=?" not in value and max(map(len, tokens)) <= _MAX_LINE - len(name) - 2:
        return _fold(name, tokens)
    # RFC 2047 §6.2: whitespace between adjacent encoded-words is ignored on display, so the
    # spaces of the original text live inside the words.
    return _fold(name, _encoded_words(value))


@lru_cache(maxsize=4096)
def _mailbox_tokens(field_name: str, email: str, name: str) -> tuple[str, ...]:
    addr = validate_addr_spec(field_name, email)
    if not name:
        return (addr,)
    return (*_phrase(f"{field_name} name", name), f"<{addr}>")


def format_address(address: Address, *, field_name: str = "address") -> str:
    """``address`` as one RFC 5322 mailbox (``Name <a@b>``), ASCII-only, on one line."""
    return " ".join(_mailbox_tokens(field_name, address.email, address.name))


def _mailbox_header(name: str, address: Address) -> str:
    return _mailbox_field(name, address.email, address.name)


@lru_cache(maxsize=4096)  # From is the same for a whole campaign
def _mailbox_field(name: str, email: str, display_name: str) -> str:
    return _fold(name, list(_mailbox_tokens(name, email, display_name)))


@lru_cache(maxsize=64)
def _date(date: datetime) -> str:
    """RFC 5322 §3.3 date-time; cached because a batch stamps every message with the same one."""
    return format_datetime(date)


@lru_cache(maxsize=256)  # one per campaign: the same for every message
def _list_id(value: str) -> str:
    check_header_text("List-Id", value)
    phrase, lt, rest = value.rpartition("<")
    if lt:
        ident = rest.removesuffix(">").strip()
        if not rest.endswith(">"):
            raise InputError(f"List-Id: {value!r} is not 'Name <list.example.com>'")
    else:
        phrase, ident = "", value.strip()
    if not _LIST_ID.fullmatch(ident):
        raise InputError(f"List-Id: {ident!r} is not a list identifier like list-label.example.com")
    tokens = _phrase("List-Id", phrase.strip()) if phrase.strip() else []
    return _fold("List-Id", [*tokens, f"<{ident}>"])


def _uri(field_name: str, uri: str, scheme: str) -> str:
    check_header_text(field_name, uri)
    # RFC 2369 §2: the URL sits in angle brackets; whitespace, '<' and '>' would break out.
    if not uri.lower().startswith(scheme) or any(c in uri for c in " \t<>") or not uri.isascii():
        raise InputError(f"{field_name}: {uri!r} is not a plain ASCII {scheme} URI without spaces")
    return f"<{uri}>"


def _list_unsubscribe(msg: OutgoingMessage) -> tuple[list[str], bool]:
    """The ``<uri>`` entries of List-Unsubscribe and whether one-click applies.

    RFC 2369 §3.2 List-Unsubscribe; RFC 8058 §3.1: one-click needs an HTTPS URI, and then
    List-Unsubscribe-Post: List-Unsubscribe=One-Click (both covered by DKIM, RFC 8058 §4).
    """
    uris = []
    url = msg.list_unsubscribe_url
    https = url is not None and url[:6].lower() == "https:"
    if url:
        uris.append(_uri("List-Unsubscribe", url, "https://" if https else "http://"))
    if msg.list_unsubscribe_mailto:
        uris.append(_uri("List-Unsubscribe", msg.list_unsubscribe_mailto, "mailto:"))
    return uris, https


def _check_message_id(message_id: str) -> None:
    check_header_text("Message-ID", message_id)
    if not _MESSAGE_ID.fullmatch(message_id):
        raise InputError(f"Message-ID: {message_id!r} is not <id-left@id-right>")


def _check_extra_name(name: str) -> None:
    check_header_text("extra header name", name)
    if not _FIELD_NAME.fullmatch(name) or len(name) > 76:
        raise InputError(f"extra header name {name!r} is not a valid field name (RFC 5322 §2.2)")
    lowered = name.lower()
    if lowered in _RESERVED or lowered.startswith("resent-"):
        raise InputError(f"extra header {name!r} is set by Cadence or adds recipients; refused")


# --- body encoding ----------------------------------------------------------------------------

# RFC 5322 §2.1.1: 998 characters per line at most, excluding CRLF. A little margin for a relay
# that adds a character (e.g. a dot for transparency is removed again; nothing else should).
MAX_7BIT_LINE = 990


def _encode_body(text: str) -> tuple[bytes, str]:
    """CRLF line ends, and as little transfer encoding as the content allows: ASCII text whose
    lines fit in 998 octets goes as it is, "7bit" (RFC 2045 §2.7, RFC 5322 §2.1.1; our HTML is
    made so, see ``render_html.wrap_long_lines``); anything else is UTF-8 as quoted-printable
    (§6.7: lines <= 76) or, when that would be larger (mostly non-Latin text), base64 (§6.8)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and "\0" not in text:
        text_lines = text.split("\n")
        if max(map(len, text_lines)) <= MAX_7BIT_LINE:
            return "\r\n".join(text_lines).encode("ascii"), "7bit"
    raw = text.replace("\n", "\r\n").encode("utf-8")
    qp = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
    if b"\n" not in raw:
        # b2a_qp copies the line end style of the input's first line break; with none it writes
        # its soft breaks ("=" + line end) with a bare LF.
        qp = qp.replace(b"\n", b"\r\n")
    if len(qp) <= len(raw) * 4 // 3 + len(raw) // 38:  # base64 size incl. its CRLFs
        return qp, "quoted-printable"
    lines = [binascii.b2a_base64(raw[i : i + 57], newline=False) for i in range(0, len(raw), 57)]
    return b"\r\n".join(lines), "base64"


def _part_headers(subtype: str, cte: str) -> bytes:
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n').encode("ascii")


# --- public API -------------------------------------------------------------------------------


def make_message_id(delivery_id: int, secret_hint: str, domain: str) -> str:
    """``<d{delivery_id}.{hmac}@{domain}>``: the same for every attempt of one delivery.

    The HMAC (keyed by ``secret_hint``, truncated to 64 bits) keeps ids unguessable, so nobody can
    enumerate deliveries from a Message-ID; the delivery id keeps duplicates recognisable
    (RFC 5322 §3.6.4: a Message-ID identifies one message, retries included).
    """
    host = validate_addr_spec("Message-ID domain", f"x@{domain}").partition("@")[2]
    tag = hmac.new(secret_hint.encode(), f"delivery:{delivery_id}".encode(), hashlib.sha256)
    return f"<d{delivery_id}.{tag.hexdigest()[:16]}@{host}>"


def provider_headers(msg: OutgoingMessage) -> list[tuple[str, str]]:
    """The headers an HTTP API must carry for us, validated exactly as :func:`build_mime` does.

    ``Message-ID``, ``List-Id``, ``List-Unsubscribe`` (+ ``-Post`` for one-click) and the extra
    headers, as (name, value) with values unencoded: the provider writes the MIME. Also checks
    the subject and addresses, so a structured-API transport refuses what build_mime refuses.
    """
    validate_addr_spec("From", msg.sender.email)
    validate_addr_spec("To", msg.to.email)
    check_header_text("From name", msg.sender.name)
    check_header_text("To name", msg.to.name)
    check_header_text("Subject", msg.subject)
    if msg.reply_to:
        validate_addr_spec("Reply-To", msg.reply_to)
    _check_message_id(msg.message_id)
    headers = [("Message-ID", msg.message_id)]
    if msg.list_id:
        _list_id(msg.list_id)
        headers.append(("List-Id", msg.list_id))
    uris, one_click = _list_unsubscribe(msg)
    if uris:
        headers.append(("List-Unsubscribe", ", ".join(uris)))
    if one_click:
        headers.append(("List-Unsubscribe-Post", ONE_CLICK))
    for name, value in msg.extra_headers:
        _check_extra_name(name)
        check_header_text(name, value)
        headers.append((name, value))
    return headers


def build_mime(msg: OutgoingMessage, *, date: datetime, signer: DkimSigner | DkimSigners | None = None) -> bytes:
    """The complete message as bytes with CRLF line ends, DKIM-signed when ``signer`` is given.

    Raises :class:`InputError` naming the field for anything that could inject a header or a
    recipient, or that cannot be written within RFC 5322 line limits.
    """
    if date.tzinfo is None or date.utcoffset() is None:
        raise InputError("Date: needs a timezone-aware datetime (RFC 5322 §3.3 zone)")
    _check_message_id(msg.message_id)

    head = [
        f"Date: {_date(date)}\r\n",
        _mailbox_header("From", msg.sender),
        _mailbox_header("To", msg.to),
    ]
    if msg.reply_to:
        head.append(f"Reply-To: {validate_addr_spec('Reply-To', msg.reply_to)}\r\n")
    head.append(_unstructured("Subject", msg.subject))
    head.append(f"Message-ID: {msg.message_id}\r\nMIME-Version: 1.0\r\n")
    if msg.list_id:
        head.append(_list_id(msg.list_id))
    # RFC 2369 §3.2 List-Unsubscribe; RFC 8058 §3.1: one-click needs an HTTPS URI, and then
    # List-Unsubscribe-Post: List-Unsubscribe=One-Click (both covered by DKIM, RFC 8058 §4).
    uris, one_click = _list_unsubscribe(msg)
    if uris:
        head.append(_fold("List-Unsubscribe", uris, [" "] + [", "] * (len(uris) - 1)))
    if one_click:
        head.append(f"List-Unsubscribe-Post: {ONE_CLICK}\r\n")
    for name, value in msg.extra_headers:
        _check_extra_name(name)
        head.append(_unstructured(name, value))

    parts = [(sub, body) for sub, body in (("plain", msg.text), ("html", msg.html)) if body]
    if not parts:
        raise InputError("message: neither a text nor an HTML body")
    encoded = [(sub, *_encode_body(body)) for sub, body in parts]
    if len(encoded) == 1:
        sub, payload, cte = encoded[0]
        content_headers = _part_headers(sub, cte)
        body = payload if payload.endswith(b"\r\n") else payload + b"\r\n"
    else:
        # "=_" can never occur in quoted-printable or base64 output ("=" is always followed by
        # two hex digits or a line end, and base64 has no "_"), so this boundary cannot collide
        # with the content (RFC 2046 §5.1.1). Derived from the Message-ID: output is reproducible.
        boundary = b"=_c" + hashlib.sha1(msg.message_id.encode()).hexdigest()[:24].encode()
        content_headers = b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n'
        chunks = []
        for sub, payload, cte in encoded:
            chunks += [b"--", boundary, b"\r\n", _part_headers(sub, cte), b"\r\n", payload, b"\r\n"]
        chunks += [b"--", boundary, b"--\r\n"]
        body = b"".join(chunks)
    header_block = "".join(head).encode("ascii") + content_headers
    message = header_block + b"\r\n" + body
    if signer is not None:
        return signer.sign_parts(header_block, body, timestamp=int(date.timestamp())) + message
    return message
