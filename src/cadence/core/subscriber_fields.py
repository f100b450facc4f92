"""A subscriber's fields checked at the door: address, name, time zone, and the shape every door
hands to the subscriber operations (:class:`SubscriberInput`).

Pure (no database, no clock): the CSV reader (subscriber_csv.py), the web forms, the CLI and the
staff tools all check a field the same way and get the same message, naming the field. The
operations that store subscribers are in cadence.operations.subscribers.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from cadence.core.message import check_header_text, validate_addr_spec
from cadence.core.suppression_keys import plain_hash
from cadence.errors import InputError

__all__ = [
    "SubscriberInput",
    "check_text",
    "check_timezone",
    "email_hash",
    "email_key",
    "normalise_email",
]

_CONTROL = {"\r", "\n", "\x00"}


def email_key(email: str) -> str:
    return email.strip().lower()


def email_hash(email: str) -> str:
    """The plain suppression hash: SHA-256 of the lowercased address (``hash_version`` sha256)."""
    return plain_hash(email_key(email))


def normalise_email(email: str, field_name: str = "email") -> str:
    """A syntactically valid address (RFC 5321/5322 via email-validator) that our message builder
    can also send to (a plain ASCII local part: no SMTPUTF8), or InputError. Checking here, at
    the door, means an address can never be stored and then fail at every send."""
    if any(ch in email for ch in _CONTROL):
        raise InputError(f"{field_name}: contains a line break or NUL")
    fast = _plain_address(email.strip())
    if fast is not None:
        return fast
    try:
        # No DNS here: imports of thousands of rows must not wait on the network.
        normalized = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InputError(f"{field_name}: {email!r} is not a valid email address ({exc})") from None
    validate_addr_spec(field_name, normalized)
    return normalized


def _plain_address(email: str) -> str | None:
    """The common case in one regex and a cached domain check: an ASCII dot-atom ``local@domain``
    comes out exactly as email-validator normalises it (local part kept, domain normalised),
    at ~1/20 of its cost: email-validator spends most of its ~200 µs on the domain (IDNA), and
    a list of a million addresses has a few thousand domains (bench/import.py). Anything else
    (quoted local parts, IDN, errors) returns None and takes the full path, so the result
    and the error messages stay email-validator's."""
    if not email.isascii():
        return None
    try:
        validate_addr_spec("email", email)  # dot-atom local part, LDH labels, RFC 5321 lengths
    except InputError:
        return None
    local, _, domain = email.rpartition("@")
    normalised_domain = _domain_as_normalised(domain)
    return None if normalised_domain is None else f"{local}@{normalised_domain}"


@functools.lru_cache(maxsize=65536)
def _domain_as_normalised(domain: str) -> str | None:
    try:
        return validate_email(f"postmaster@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def check_timezone(name: str | None, field_name: str = "timezone") -> str | None:
    if not name:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"{field_name}: {name!r} is not an IANA time zone such as America/New_York") from None
    return name


# Joiners some scripts need inside words (Persian, Hindi, Sinhala...): allowed between two
# letters or marks, nowhere else (a loose form of RFC 5892's CONTEXTJ rule).
_JOINERS = {"\u200c", "\u200d"}
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def check_text(value: str, field_name: str, limit: int = 200) -> str:
    """`value` normalised to NFC and stripped, or InputError naming the field (and the code
    point, never the value): no controls (Cc), no invisible format characters (Cf: bidi
    overrides such as U+202E, zero-width spaces, U+FEFF), no lone surrogates (Cs), no line or
    paragraph separators. Such characters reach ``To:`` display names and greetings, where they
    reverse or hide text (issue 10; Unicode TR 36 §2.1). Zero-width (non-)joiners are kept
    between letters, where scripts such as Persian need them."""
    if any(ch in value for ch in _CONTROL):
        raise InputError(f"{field_name}: contains a line break or NUL")
    check_header_text(field_name, value)  # names end up in To: headers (its message for CR, LF...)
    value = unicodedata.normalize("NFC", value)
    for index, ch in enumerate(value):
        if ch == "\ufffd":  # what invalid UTF-8 in a form decodes to: the text was lost on the way
            raise InputError(f"{field_name}: contains a character that is not valid text (U+FFFD); type plain text")
        if unicodedata.category(ch) not in _REFUSED_CATEGORIES:
            continue
        if (
            ch in _JOINERS
            and 0 < index < len(value) - 1
            and _is_letter(value[index - 1])
            and _is_letter(value[index + 1])
        ):
            continue
        kind = "a control" if unicodedata.category(ch) == "Cc" else "an invisible formatting"
        raise InputError(f"{field_name}: contains {kind} character (U+{ord(ch):04X}); type plain text")
    if len(value) > limit:
        raise InputError(f"{field_name}: is longer than {limit} characters")
    return value.strip()


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "M")




@dataclass(frozen=True)
class SubscriberInput:
    email: str
    first_name: str = ""
    timezone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # added to the subscriber's tags (an import never removes one)


