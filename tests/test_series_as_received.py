"""Every email of the series for three runners (trail, a trail runner whose race is weeks away,
a treadmill runner), sent through the real send path with DKIM to a
real SMTP server, then checked as a receiving server would: no parser defects, every header
Gmail's bulk-sender rules ask for, the same links in text and HTML, a DKIM signature that
verifies (and breaks when List-Unsubscribe is altered), and no content rule of either of the two
spam filters most mail servers run (SpamAssassin and rspamd) adding anything to the score."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.operations import enrollment
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import cadence_env
from tests.support.keys import TEST_KEYS
from tests.support.rspamd import Rspamd, rspamd_installed
from tests.support.services import unavailable
from tests.support.smtpd import ReceivedMessage, SmtpSink

SOON = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m")  # the race month: weeks away all along
PEOPLE = [
    SubscriberInput("trail@example.com", "Tess", "America/New_York", {"terrain": "trails"}),
    SubscriberInput(
        "race@example.com", "Rafael", "America/Chicago",
        {"terrain": "trails", "training_for_race": "yes", "race_month": SOON},
    ),
    SubscriberInput("everyday@example.com", "", "Europe/London", {"terrain": "treadmill"}),
]  # fmt: skip
STEPS = 8
REQUIRED = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe",
            "List-Unsubscribe-Post", "DKIM-Signature"]  # fmt: skip


@pytest.fixture(scope="module")
def received(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ReceivedMessage], bytes]:
    tmp = tmp_path_factory.mktemp("series")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp / "dkim.pem").write_bytes(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    clock = FileClock(tmp / "clock")
    # Start at the real time: dkimpy refuses a signature whose t= lies in the future.
    clock.set(datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=26))
    with SmtpSink() as sink:
        env = cadence_env(
            tmp,
            CADENCE_DATABASE_URL=f"sqlite:///{tmp / 'c.db'}",
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BASE_URL="https://news.precisionbodywork.example",
            CADENCE_DKIM_KEY_FILE=str(tmp / "dkim.pem"),
            CADENCE_DKIM_SELECTOR="cadence",
            CADENCE_DKIM_DOMAIN="precisionbodywork.example",
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        runtime = Runtime.from_settings(settings)
        with transaction(settings.database_url) as session:
            import_subscribers(session, PEOPLE, clock.now(), keys=TEST_KEYS)
            people = list(session.scalars(select(Subscriber)))
            enrollment.enroll(session, runtime.catalog.get("lower-back-pain"), people, clock.now())
        for _ in range(24 * 25):  # 25 days in hours: the course and its day-21 check-in
            for batch in enrollment.tick(runtime).batches:
                enrollment.deliver(runtime, batch)
            clock.advance(timedelta(hours=1))
        runtime.close()
        messages = sink.wait_for(3 * STEPS)
    txt = b"v=DKIM1; k=rsa; p=" + __import__("base64").b64encode(public)
    return messages, txt


def test_all_twenty_four_emails_arrive(received: tuple[list[ReceivedMessage], bytes]) -> None:
    messages, _ = received
    assert len(messages) == 3 * STEPS
    by_person: dict[str, list[str]] = {}
    for m in messages:
        parsed = email.message_from_bytes(m.data, policy=email.policy.default)
        by_person.setdefault(parsed["To"].addresses[0].addr_spec, []).append(parsed["Subject"])
    assert all(len(set(subjects)) == STEPS for subjects in by_person.values())  # a new subject each time
    # The trail runner with a race weeks away gets the race-day load advice; the others do not.
    assert "Race day is close: easing your back without losing it" in by_person["race@example.com"]
    assert "Time on feet, not miles: easing off on the trails" in by_person["trail@example.com"]


def test_every_email_parses_without_defects_and_has_the_bulk_sender_headers(
    received: tuple[list[ReceivedMessage], bytes],
) -> None:
    for message in received[0]:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        for part in parsed.walk():
            assert not part.defects, (parsed["Subject"], part.defects)
        for name in REQUIRED:
            assert parsed[name], f"{name} missing"
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert re.search(r"<https://news\.precisionbodywork\.example/u/[^>]+>", parsed["List-Unsubscribe"])
        assert "<mailto:" in parsed["List-Unsubscribe"]
        assert parsed.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
        assert all(len(line) <= 998 for line in message.data.split(b"\r\n"))


def _links(text: str) -> set[str]:
    return {u.rstrip(").,") for u in re.findall(r"https://[^\s\"'<>)]+", text) if "/o/" not in u}


def test_text_and_html_carry_the_same_links(received: tuple[list[ReceivedMessage], bytes]) -> None:
    for message in received[0]:
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        html = parsed.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        hrefs = {h.replace("&amp;", "&") for h in re.findall(r'href="(https://[^"]+)"', html)}
        assert hrefs and hrefs == _links(text), parsed["Subject"]


def test_dkim_verifies_and_breaks_when_list_unsubscribe_is_altered(
    received: tuple[list[ReceivedMessage], bytes],
) -> None:
    messages, txt = received

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"cadence._domainkey.precisionbodywork.example."
        return txt

    for message in messages:
        assert dkim.verify(message.data, dnsfunc=dns)
        signature = email.message_from_bytes(message.data)["DKIM-Signature"]
        assert "list-unsubscribe-post" in signature.lower()
        tampered = re.sub(
            rb"List-Unsubscribe: <https://[^>]+>", b"List-Unsubscribe: <https://evil.example/u/x>", message.data
        )
        assert tampered != message.data
        assert not dkim.verify(tampered, dnsfunc=dns)


def test_spamassassin_scores_no_email_on_any_rule(
    received: tuple[list[ReceivedMessage], bytes], tmp_path: Path
) -> None:
    if shutil.which("spamassassin") is None:
        unavailable("spamassassin", "apt-get install spamassassin (make test does this as root)")
    messages = received[0]
    paths = []
    for number, message in enumerate(messages):
        path = tmp_path / f"{number:03}.eml"
        path.write_bytes(message.data)
        paths.append(str(path))
    # One run for every email: SpamAssassin spends seconds loading its rules, so a process per
    # email made this the suite's slowest test (24 × ~6 s). It writes each checked message in
    # the order given, each starting with its X-Spam-Checker-Version header.
    # -L: local tests only (no network here); -t: report the score and the rules that hit.
    out = subprocess.run(["spamassassin", "-L", "-t", *paths], capture_output=True, timeout=600).stdout
    reports = [b"X-Spam-Checker-Version: " + part for part in re.split(rb"(?m)^X-Spam-Checker-Version: ", out)[1:]]
    assert len(reports) == len(messages), out[-2000:]
    worst = 0.0
    for message, report in zip(messages, reports, strict=True):
        status = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+).*?tests=([^\r\n]*(?:\r?\n\t[^\r\n]*)*)", report)
        assert status, report[-2000:]
        score = float(status.group(1))
        rules = b" ".join(status.group(2).split()).decode()
        subject = email.message_from_bytes(message.data, policy=email.policy.default)["Subject"]
        print(f"SpamAssassin {score:4.1f}  {subject}  [{rules}]")
        worst = max(worst, score)
        # The report's table: " pts rule name  description"; any rule with points counts.
        scoring = re.findall(rb"^\s*(\d+\.\d+) ([A-Z0-9_]+) ", report.split(b"Content analysis details", 1)[-1], re.M)
        assert not [(r, p) for p, r in scoring if float(p) > 0], (subject, rules)
        assert score <= 0.0, (subject, rules)
    print(f"worst score: {worst}")


# Symbols about the delivery rather than the email: the simulated clock dates each email days
# before the scan (DKIM needs a t= in the past), which rspamd takes for a stale message.
NOT_ABOUT_CONTENT = {"DATE_IN_PAST"}


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rspamd]:
    """One private rspamd for the module (tests/support/rspamd.py): no DNS, no Redis."""
    if not rspamd_installed():
        unavailable("rspamd", "apt-get install rspamd (make system-deps does this as root)")
    with Rspamd(tmp_path_factory.mktemp("rspamd")) as server:
        yield server


def test_rspamd_scores_no_email_on_a_content_rule(
    received: tuple[list[ReceivedMessage], bytes], rspamd: Rspamd
) -> None:
    """With the network checks off and a plausible client, every symbol left judges the content
    (MIME, headers, HTML, URLs, text): none may add to the score. URI_COUNT_ODD (+1.0) was the
    open pixel's extra URI in the HTML part; MANY_INVISIBLE_PARTS the hidden preheader."""
    flagged = []
    for message in received[0]:
        result = rspamd.scan(message.data, mail_from=message.mail_from, rcpt=message.rcpt_tos[0])
        subject = email.message_from_bytes(message.data, policy=email.policy.default)["Subject"]
        print(f"rspamd {result}  {subject}")
        if [s for s in result.scoring() if s.name not in NOT_ABOUT_CONTENT]:
            flagged.append(f"{subject}: {result}")
    assert not flagged, "\n".join(flagged)
