"""Bounce mail: RFC 3464 delivery status notifications read from a folder or an IMAP mailbox,
turned into :class:`cadence.operations.bounce_events.BounceEvent` values and applied by
:func:`cadence.operations.bounce_events.apply_bounce_events` (see that module for what each kind does)."""

from __future__ import annotations

import email
import hashlib
import imaplib
import logging
import os
import re
import ssl
from collections.abc import Iterator, Sequence
from contextlib import suppress as suppress_errors
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.iterators import typed_subpart_iterator
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import SplitResult, unquote, urlsplit

from flufl.bounce import all_failures

from cadence.config import Settings
from cadence.db.session import transaction
from cadence.errors import ConfigError, InputError
from cadence.operations.bounce_events import ApplyResult, BounceEvent, BounceKind, apply_bounce_events

log = logging.getLogger(__name__)

IMAP_URL_VARIABLE = "CADENCE_BOUNCE_IMAP_URL"


# ---------------------------------------------------------------------------- bounce mail

# RFC 3463 §3: permanent failures about our message or a policy rather than the mailbox, and
# the codes RFC 3463 itself calls "persistent transient" (X.2.2 mailbox full, X.4.7 expired).
_SOFT_SUBJECTS = {"3", "5", "6", "7"}
_SOFT_CODES = {("2", "2"), ("2", "3"), ("4", "7")}
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DAEMONS = {"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"}
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ _-]?(reply|response|antwort)|auto:|out of (the )?office|vacation|abwesenheit|absence)",
    re.IGNORECASE,
)
_INLINE_ID = re.compile(rb"^Message-ID:[ \t]*(<d\d{1,18}\.[0-9a-f]{16}@[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_SEVERITY = {"hard_bounce": 0, "soft_bounce": 1, "ignored": 2}


def parse_dsn(raw: bytes) -> BounceEvent | None:
    """Read one message from the bounce mailbox: a BounceEvent, or None if it is not a bounce.

    RFC 3464 ``message/delivery-status`` reports are read here, because flufl.bounce's DSN
    detector drops the Status code (it calls every ``Action: failed`` permanent, 4.x.x included).
    Other bounce formats go to flufl.bounce's heuristic detectors, but only for mail from a
    MAILER-DAEMON: on anything else its LLNL detector takes any ", addr@host," line for a bounce.
    An auto-reply (RFC 3834) is ``ignored``. The address is the *original* recipient: the DSN's
    Original-Recipient, else the To of the quoted original message, else Final-Recipient; never
    an address of ours found in the quoted headers.
    """
    msg = email.message_from_bytes(raw)  # compat32 Message: the API flufl.bounce's detectors use
    own_id = _clean(msg.get("Message-ID"))
    event_id = "dsn:" + (own_id or "sha256:" + hashlib.sha256(raw).hexdigest())
    original = _quoted_original(msg)
    quoted_id = _clean(original.get("Message-ID")) if original is not None else ""
    if not quoted_id and (inline := _INLINE_ID.search(raw)):  # qmail & co. quote the original as text
        quoted_id = inline.group(1).decode("ascii")
    quoted_to = _single_address(original.get_all("To", [])) if original is not None else ""
    occurred = _date(msg.get("Date"))
    reports = list(typed_subpart_iterator(msg, "message", "delivery-status"))
    if reports:
        kind, (original_recipient, final_recipient), detail = _read_delivery_status(reports)
        address = original_recipient or quoted_to or final_recipient
        if not address:
            return None
        if final_recipient and final_recipient.lower() != address.lower():
            detail = f"{detail} (final recipient {final_recipient})"  # forwarded or aliased
        return BounceEvent(kind, address, event_id, None, detail, occurred, quoted_id or None)
    if _is_from_mail_system(msg):
        own = _own_addresses(msg, original)
        temporary, permanent = all_failures(msg)
        found: list[tuple[BounceKind, frozenset[bytes]]] = [("hard_bounce", permanent), ("soft_bounce", temporary)]
        for heuristic_kind, recipients in found:
            addresses = sorted(a for a in (r.decode("ascii").lower() for r in recipients) if a not in own)
            if recipients and (quoted_to or addresses):
                detail = f"{heuristic_kind.replace('_', ' ')} reported by {parseaddr(msg.get('From', ''))[1]}"
                address = quoted_to or addresses[0]
                return BounceEvent(heuristic_kind, address, event_id, None, detail, occurred, quoted_id or None)
        return None
    why = _auto_reply(msg)
    if why:
        return BounceEvent("ignored", parseaddr(msg.get("From", ""))[1], event_id, None, why, occurred)
    return None


def _read_delivery_status(reports: Sequence[Message]) -> tuple[BounceKind, tuple[str, str], str]:
    """The most severe per-recipient block: kind, (original, final) recipient, detail."""
    best: tuple[BounceKind, tuple[str, str], str] = ("ignored", ("", ""), "no per-recipient fields")
    for block in _recipient_blocks(reports):
        action = _clean(block.get("Action")).lower()
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
        status = _STATUS.search(str(block.get("Status") or "")) or _STATUS.search(diagnostic)
        kind, why = _classify(action, status)
        code = status.group(0) if status else "no status"
        detail = f"{code} {why}: {diagnostic}".strip(": ")[:500]
        recipients = (_address_field(block.get("Original-Recipient")), _address_field(block.get("Final-Recipient")))
        if _SEVERITY[kind] < _SEVERITY[best[0]] or not any(best[1]):
            best = (kind, recipients, detail)
    return best


def _classify(action: str, status: re.Match[str] | None) -> tuple[BounceKind, str]:
    if action.startswith("delayed"):
        return "ignored", "delayed: the reporting MTA is still trying (RFC 3464 §2.3.3)"
    if not action.startswith(("failed", "error")):  # delivered, relayed, expanded; "error" is opensmtpd
        return "ignored", f"action {action or 'missing'}"
    if status is None:
        return "hard_bounce", "failed"  # Status is required (RFC 3464 §2.3.4); failed alone is final
    klass, subject, detail = status.groups()
    if klass == "4":
        return "soft_bounce", "transient failure, given up"
    if klass == "2":
        return "ignored", "success status"
    if subject in _SOFT_SUBJECTS or (subject, detail) in _SOFT_CODES:
        return "soft_bounce", "permanent for this message, not for the mailbox (RFC 3463)"
    return "hard_bounce", "permanent failure"


def _recipient_blocks(reports: Sequence[Message]) -> Iterator[Message]:
    for part in reports:
        payload = part.get_payload()
        if isinstance(payload, list):  # header blocks; the per-message one has no Action
            yield from (block for block in payload if isinstance(block, Message) and block.get("Action"))


def _quoted_original(msg: Message) -> Message | None:
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif kind == "text/rfc822-headers":
            body = part.get_payload(decode=True)
            if isinstance(body, bytes):
                return email.message_from_bytes(body)
    return None


def _is_from_mail_system(msg: Message) -> bool:
    sender = parseaddr(msg.get("From", ""))[1].lower()
    return sender.partition("@")[0] in _DAEMONS or msg.get("X-Failed-Recipients") is not None


def _auto_reply(msg: Message) -> str:
    auto = (msg.get("Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"auto-reply (Auto-Submitted: {auto}, RFC 3834 §5)"
    for header in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if msg.get(header):
            return f"auto-reply ({header})"
    if (msg.get("Precedence") or "").strip().lower() == "auto_reply":
        return "auto-reply (Precedence: auto_reply)"
    subject = " ".join((msg.get("Subject") or "").split())
    return f"auto-reply (subject {subject[:80]!r})" if _AUTO_SUBJECT.match(subject) else ""


def _own_addresses(msg: Message, original: Message | None) -> set[str]:
    """Addresses that are ours, never the bounced recipient: our sender in the quoted headers,
    our bounce mailbox in the report's own headers."""
    values = msg.get_all("To", []) + msg.get_all("Delivered-To", []) + msg.get_all("X-Original-To", [])
    if original is not None:
        for header in ("From", "Sender", "Reply-To", "Return-Path"):
            values += original.get_all(header, [])
    return {address.lower() for _, address in getaddresses([str(v) for v in values]) if address}


def _address_field(value: Any) -> str:
    """``rfc822; user@host`` (RFC 3464 §2.3.1-2) → ``user@host``."""
    _type, sep, address = str(value or "").partition(";")
    address = address.strip().strip("<>").strip()
    return address if sep and "@" in address else ""


def _single_address(values: list[Any]) -> str:
    addresses = [a for _, a in getaddresses([str(v) for v in values]) if "@" in a]
    return addresses[0] if len(addresses) == 1 else ""


def _clean(value: Any) -> str:
    return "".join(str(value).split()) if value else ""


def _date(value: Any) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError):
        return None
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# ---------------------------------------------------------------------------- mailboxes


@dataclass
class BounceRunResult:
    messages: int = 0
    events: ApplyResult = field(default_factory=ApplyResult)
    unrecognised: list[str] = field(default_factory=list)  # not a bounce, nor an auto-reply


def process_bounce_dir(path: Path, *, database_url: str, now: datetime, soft_limit: int) -> BounceRunResult:
    """Process every message in a maildir (``new/`` and ``cur/``) or a folder of ``*.eml`` files
    once: each is applied in its own transaction, then moved to ``processed/`` under `path`. A
    crash between the two only means the file is read again and its event found a duplicate."""
    if not path.is_dir():
        raise InputError(f"{path}: not a directory")
    if (path / "new").is_dir() or (path / "cur").is_dir():  # maildir: tmp/ holds unfinished files
        files = sorted(f for sub in ("new", "cur") if (path / sub).is_dir() for f in (path / sub).iterdir())
    else:
        files = sorted(path.glob("*.eml"))
    done = path / "processed"
    result = BounceRunResult()
    for file in (f for f in files if f.is_file() and not f.name.startswith(".")):
        _process_raw(file.read_bytes(), file.name, result, database_url, now, soft_limit)
        done.mkdir(exist_ok=True)
        target, n = done / file.name, 1
        while target.exists():
            target, n = done / f"{file.stem}.{n}{file.suffix}", n + 1
        os.replace(file, target)
    return result


class ImapClient(Protocol):
    """The part of :class:`imaplib.IMAP4` we use (tests pass a stand-in)."""

    def login(self, user: str, password: str) -> tuple[str, list[Any]]: ...
    def select(self, mailbox: str = "INBOX", readonly: bool = False) -> tuple[str, list[Any]]: ...
    def uid(self, command: str, *args: Any) -> tuple[str, list[Any]]: ...
    def logout(self) -> tuple[str, list[Any]]: ...


def fetch_imap_bounces(
    url: str, *, database_url: str, now: datetime, soft_limit: int, client: ImapClient | None = None
) -> BounceRunResult:
    """Process the UNSEEN messages of ``imaps://user:pass@host[:port]/MAILBOX`` (``imap://`` uses
    STARTTLS). Bodies are fetched with BODY.PEEK (RFC 3501 §6.4.5) and flagged \\Seen only after
    their transaction committed, so a crash leaves them unseen for the next run."""
    parts = urlsplit(url)
    if parts.scheme not in ("imap", "imaps") or not parts.hostname or not parts.username:
        raise ConfigError(f"{IMAP_URL_VARIABLE}: expected imaps://user:password@host/INBOX")
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    result = BounceRunResult()
    try:
        imap = client or _connect(parts)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ConfigError(f"{IMAP_URL_VARIABLE}: cannot connect to {parts.hostname}: {exc}") from exc
    try:
        imap.login(unquote(parts.username), unquote(parts.password or ""))
        status, _ = imap.select('"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if status != "OK":
            raise ConfigError(f"{IMAP_URL_VARIABLE}: no mailbox {mailbox!r} on {parts.hostname}")
        _, found = imap.uid("SEARCH", "UNSEEN")
        for uid in (found[0] or b"").split():
            _, fetched = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), b"")
            _process_raw(raw, f"imap uid {uid.decode()}", result, database_url, now, soft_limit)
            imap.uid("STORE", uid, "+FLAGS", "(\\Seen)")
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ConfigError(f"{IMAP_URL_VARIABLE}: {parts.hostname}: {exc}") from exc
    finally:
        with suppress_errors(OSError, imaplib.IMAP4.error):  # already gone: nothing to release
            imap.logout()
    return result


def _connect(parts: SplitResult) -> ImapClient:
    context = ssl.create_default_context()
    host = parts.hostname or ""
    if parts.scheme == "imaps":
        return imaplib.IMAP4_SSL(host, parts.port or 993, ssl_context=context, timeout=30)
    plain = imaplib.IMAP4(host, parts.port or 143, timeout=30)
    plain.starttls(context)  # never send the password in clear text
    return plain


def _process_raw(
    raw: bytes, name: str, result: BounceRunResult, database_url: str, now: datetime, soft_limit: int
) -> None:
    result.messages += 1
    try:
        event = parse_dsn(raw)
    except Exception:  # one unreadable message must not stop the rest of the mailbox
        log.exception("cannot read bounce message %s", name)
        event = None
    if event is None:
        result.unrecognised.append(name)
        return
    with transaction(database_url) as session:
        result.events.add(apply_bounce_events(session, [event], now, soft_limit=soft_limit))


# What `cadence bounces process` calls. This module is a door, like web/webhooks.py: it reads
# bounce mail and hands each report to operations/bounce_events.py; nothing in operations/
# imports it (issue 12: nothing below imports upward).
def record_bounce_folder(settings: Settings, folder: Path, now: datetime) -> BounceRunResult:
    """Apply the bounce and complaint reports (RFC 3464, ARF) in a maildir or folder of .eml
    files: hard bounces and complaints suppress, soft bounces count towards the limit."""
    url, limit = settings.database_url, settings.soft_bounce_limit
    return process_bounce_dir(folder, database_url=url, now=now, soft_limit=limit)


def record_bounce_mailbox(settings: Settings, imap_url: str, now: datetime) -> BounceRunResult:
    """The same for the unseen messages of an IMAP mailbox."""
    url, limit = settings.database_url, settings.soft_bounce_limit
    return fetch_imap_bounces(imap_url, database_url=url, now=now, soft_limit=limit)
