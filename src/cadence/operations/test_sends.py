"""Test sends (issue 13): one email of a campaign, rendered for a segment with sample data (or a
chosen subscriber's), marked as a test, sent to a few given addresses through the real
configured transport. Never a ledger row, never counted in status or results.

Marked as a test: the subject starts with ``[TEST] ``, the message carries an
``X-Cadence-Test: yes`` header and its own Message-ID (``<test.…@domain>``), and every link
that would act on a subscriber (unsubscribe, preferences, web view) is a sample link: a test
recipient who clicks "unsubscribe" must not unsubscribe the subscriber whose data was used.
No open pixel, no click tracking (there is no delivery to count them on).

Rate limited: at most :data:`MAX_TEST_RECIPIENTS` addresses per call and
:data:`TEST_SENDS_PER_HOUR` test emails per hour in all (every staff member and door, counted
from the audit log), so a typo'd script cannot turn send-test into a bulk sender.

:func:`send_test_message` is the reusable core (mark → MIME → transport): a newsletter's
send-test renders its own message and calls it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cadence.core.campaign import Campaign, Segment, Step
from cadence.core.dkim import DkimSigner, DkimSigners
from cadence.core.message import Address, OutgoingMessage, build_mime, validate_addr_spec
from cadence.core.render import Renderer, render_email
from cadence.core.segments import choose_segment
from cadence.core.subscriber_fields import email_key
from cadence.db import console as console_store
from cadence.db.audit import record_audit
from cadence.db.enrollments import subscriber_by_email_key
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.db.test_sends import test_recipients_since
from cadence.errors import InputError, NotFound, UsageError
from cadence.operations.runtime import Runtime
from cadence.review.previews import DEFAULT_SAMPLE_SUBSCRIBERS, SAMPLE_LINKS
from cadence.transports.base import SendResult, Transport

__all__ = [
    "MAX_TEST_RECIPIENTS",
    "TEST_PREFIX",
    "TEST_SENDS_PER_HOUR",
    "TestSendResult",
    "mark_as_test",
    "resolve_segment",
    "resolve_step",
    "send_campaign_test",
    "send_test_message",
    "test_subscriber",
]

TEST_PREFIX = "[TEST] "
MAX_TEST_RECIPIENTS = 20
TEST_SENDS_PER_HOUR = 100


@dataclass(frozen=True)
class TestSendResult:
    campaign: str
    step: str
    segment: str
    subject: str
    sample: str  # whose data filled the email: "sample" or the subscriber's address
    sent: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "step": self.step,
            "segment": self.segment,
            "subject": self.subject,
            "data_of": self.sample,
            "sent": self.sent,
            "refused": self.refused,
        }


# ---------------------------------------------------------------------------- the reusable core


def mark_as_test(message: OutgoingMessage, domain: str) -> OutgoingMessage:
    """`message` as a test: subject prefixed, a test header, a Message-ID of its own."""
    subject = message.subject if message.subject.startswith(TEST_PREFIX) else TEST_PREFIX + message.subject
    return replace(
        message,
        subject=subject,
        message_id=f"<test.{secrets.token_hex(8)}@{domain}>",
        extra_headers=(*message.extra_headers, ("X-Cadence-Test", "yes")),
        metadata={**message.metadata, "test": "yes"},
    )


def send_test_message(
    transport: Transport,
    message: OutgoingMessage,
    recipients: Sequence[str],
    *,
    now: datetime,
    signer: DkimSigner | DkimSigners | None = None,
) -> list[SendResult]:
    """Send `message`, marked as a test, once to each of `recipients` through `transport`
    (one result per recipient, in order). Writes nothing anywhere."""
    domain = message.sender.email.rsplit("@", 1)[1]
    pairs = []
    for rcpt in recipients:
        one = mark_as_test(replace(message, to=Address(rcpt, "")), domain)
        pairs.append((one, build_mime(one, date=now, signer=signer) if transport.needs_mime else b""))
    return transport.send_many(pairs)


# ---------------------------------------------------------------------------- choosing what to send


def resolve_step(campaign: Campaign, text: str) -> tuple[int, Step]:
    """``--step``: a number (1 is the first email) or a step id."""
    if text.strip().isdigit():
        number = int(text)
        if 1 <= number <= len(campaign.steps):
            return number - 1, campaign.steps[number - 1]
    for index, step in enumerate(campaign.steps):
        if step.id == text:
            return index, step
    listing = ", ".join(f"{i}. {s.id}" for i, s in enumerate(campaign.steps, 1))
    raise NotFound(f"--step: {campaign.id} has no step {text!r} (steps: {listing})")


def resolve_segment(campaign: Campaign, text: str, *, option: str = "--segment") -> Segment:
    """A segment by its id or by the name ``campaigns validate`` and ``status`` show
    (case and spacing aside); NotFound lists the valid ones."""
    wanted = " ".join(text.split()).casefold()
    for segment in campaign.segments:
        if segment.id.casefold() == wanted or " ".join(segment.name.split()).casefold() == wanted:
            return segment
    listing = "; ".join(f"{s.id} ({s.name})" for s in campaign.segments)
    raise NotFound(f"{option}: {campaign.id} has no segment {text!r}; segments: {listing}")


def test_subscriber(session: Session, chosen: str, *, field_name: str) -> Subscriber:
    """The subscriber whose data fills a test: `chosen` is their address or their id (as the
    console's subscriber pages show it). InputError naming `field_name` as the caller's form,
    option or body calls it ("--subscriber", "As this subscriber", "subscriber") otherwise, so
    nothing is sent."""
    chosen = chosen.strip()
    # An id is ASCII digits within the database's integers ("²" is a digit to str.isdigit, and a
    # 20-digit number overflows SQLite's and PostgreSQL's BIGINT): anything else is an address.
    numeric = chosen.isascii() and chosen.isdigit()
    found = console_store.subscriber(session, int(chosen)) if numeric and int(chosen) < 2**63 else None
    if found is None and not numeric:
        found = subscriber_by_email_key(session, email_key(chosen))
    if found is None:
        raise InputError(f"{field_name}: no subscriber {chosen!r} (give their address or id)")
    return found


def parse_recipients(text: str) -> list[str]:
    """``--to a@x,b@y``: each a valid address, at most :data:`MAX_TEST_RECIPIENTS`."""
    addresses = list(dict.fromkeys(a.strip() for a in text.replace(";", ",").split(",") if a.strip()))
    if not addresses:
        raise UsageError("--to: give one or more addresses, separated by commas")
    if len(addresses) > MAX_TEST_RECIPIENTS:
        raise UsageError(f"--to: {len(addresses)} addresses, at most {MAX_TEST_RECIPIENTS} per test send")
    for address in addresses:
        try:
            validate_addr_spec("--to", address)
        except InputError:
            raise InputError(f"--to: {address!r} is not a valid email address") from None
    return addresses


# ---------------------------------------------------------------------------- the operation


def send_campaign_test(
    runtime: Runtime,
    campaign_name: str,
    *,
    step: str,
    segment: str | None,
    to: str,
    subscriber: str | None,
    actor: str,
    subscriber_field: str = "--subscriber",
) -> TestSendResult:
    """Render step `step` of campaign `campaign_name` for `segment` (default: the segment the
    subscriber is in today) with the data of the subscriber `subscriber` (their address or id;
    default: a sample runner) and send it as a test to the addresses in `to`. Checked before
    anything is sent: the step, the segment, the addresses, the subscriber (an unknown one is an
    InputError naming `subscriber_field`), the hourly cap. The CLI's ``--subscriber``, the
    console's "As this subscriber" and the staff API's ``subscriber`` all come here."""
    subscriber = (subscriber or "").strip() or None
    now = runtime.clock.now()
    recipients = parse_recipients(to)
    campaign = runtime.catalog.get(campaign_name)
    _, chosen_step = resolve_step(campaign, step)
    database_url = runtime.settings.database_url
    with transaction(database_url) as session:
        data: dict[str, Any] = dict(DEFAULT_SAMPLE_SUBSCRIBERS[0])
        data_of = "sample"
        if subscriber is not None:
            found = test_subscriber(session, subscriber, field_name=subscriber_field)
            data = {"first_name": found.first_name, "email": found.email, "attributes": dict(found.attributes or {})}
            data_of = f"subscriber:{found.id}"  # whose data left for `to` (the audit entry; never the address)
        already = test_recipients_since(session, now - timedelta(hours=1))
    if segment is not None:
        chosen_segment = resolve_segment(campaign, segment)
    elif subscriber is not None:
        chosen_segment = choose_segment(campaign.segments, data.get("attributes") or {}, now.date())
    else:
        listing = ", ".join(s.id for s in campaign.segments)
        raise UsageError(f"give --segment (one of: {listing}) or --subscriber EMAIL")
    if already + len(recipients) > TEST_SENDS_PER_HOUR:
        raise InputError(
            f"test sends are limited to {TEST_SENDS_PER_HOUR} emails per hour; {already} went out in the last "
            f"hour, so {max(0, TEST_SENDS_PER_HOUR - already)} more can go now"
        )
    message = _render(runtime.renderer, campaign, chosen_step, chosen_segment, data)
    # Sent outside any transaction: an SMTP conversation must not hold the database (SQLite's
    # write lock); the audit entry follows in its own.
    results = send_test_message(runtime.transport, message, recipients, now=now, signer=runtime.signer)
    sent = [r for r, res in zip(recipients, results, strict=True) if res.status == "sent"]
    refused = {r: res.detail or res.status for r, res in zip(recipients, results, strict=True) if res.status != "sent"}
    with transaction(database_url) as session:
        record_audit(
            session,
            actor=actor,
            action="campaign.send_test",
            target=f"campaign:{campaign.id}",
            detail={
                "step": chosen_step.id,
                "segment": chosen_segment.id,
                "to": recipients,
                "sent": len(sent),
                "data_of": data_of,
            },
            now=now,
        )
    return TestSendResult(
        campaign.id,
        chosen_step.id,
        chosen_segment.id,
        TEST_PREFIX + message.subject,
        str(data.get("email")) if subscriber is not None else "sample",
        sent,
        refused,
    )


def _render(
    renderer: Renderer, campaign: Campaign, step: Step, segment: Segment, subscriber: Mapping[str, Any]
) -> OutgoingMessage:
    variant = renderer.variant(campaign, step, segment)
    rendered = render_email(variant, subscriber=subscriber, links=SAMPLE_LINKS)
    domain = campaign.sender_email.rsplit("@", 1)[1]
    return OutgoingMessage(
        sender=Address(campaign.sender_email, campaign.sender_name),
        to=Address(str(subscriber.get("email") or "test@example.com"), ""),
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        message_id=f"<test@{domain}>",  # replaced per recipient by mark_as_test
        reply_to=campaign.reply_to,
        list_id=f"{campaign.name} <{campaign.id}.{domain}>",
        list_unsubscribe_url=SAMPLE_LINKS["unsubscribe"],
        metadata={"campaign": campaign.id, "step": step.id},
    )
