"""Ed25519 DKIM (RFC 8463) beside RSA: each key type alone and both together, verified by dkimpy
(its ed25519 path needs PyNaCl) against the public keys as DNS would serve them (dnsfunc); the
send path from settings to a real SMTP server; bad settings through the installed command."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value
from sqlalchemy import select

from cadence.clock import FileClock
from cadence.config import load_settings
from cadence.core.dkim import DEFAULT_SIGNED_HEADERS, DkimSigner, DkimSigners
from cadence.core.message import Address, OutgoingMessage, build_mime, make_message_id
from cadence.core.subscriber_fields import SubscriberInput
from cadence.db.migrate import upgrade
from cadence.db.models import Subscriber
from cadence.db.session import transaction
from cadence.errors import ConfigError
from cadence.operations import enrollment
from cadence.operations.runtime import Runtime
from cadence.operations.subscribers import import_subscribers
from tests.support.cluster import cadence_env
from tests.support.dns_server import DnsServer
from tests.support.keys import TEST_KEYS
from tests.support.smtpd import SmtpSink

pytest.importorskip("nacl", reason="dkimpy verifies ed25519 with PyNaCl: pip install -e '.[test]'")

CADENCE = str(Path(sys.executable).with_name("cadence"))
DATE = datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
DOMAIN = "precisionbodywork.example"
RSA_SELECTOR, ED_SELECTOR = "cad-rsa", "cad-ed"
Resolver = Callable[..., bytes | None]

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
RSA_PEM, ED_PEM = RSA_KEY.private_bytes(*PKCS8), ED_KEY.private_bytes(*PKCS8)


def records() -> dict[bytes, bytes]:
    """The TXT record of each selector, as published (RFC 6376 §3.6.1; RFC 8463 §4: raw 32 bytes)."""
    der = RSA_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        f"{RSA_SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(der),
        f"{ED_SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw),
    }


def dns(name: bytes, timeout: int = 5) -> bytes | None:
    return records().get(name)


def message(**changes: object) -> OutgoingMessage:
    base = OutgoingMessage(
        sender=Address(f"news@{DOMAIN}", "Precision Clinical Bodywork"),
        to=Address("bob@example.org", "Bob"),
        subject="Your   first\tstep",
        html="<p>Hello   <b>Bob</b>\t </p>\n" * 300,
        text="Hello Bob  \n\n\n",
        message_id=make_message_id(7, "secret", DOMAIN),
        list_id=f"Runners <runners.{DOMAIN}>",
        list_unsubscribe_url=f"https://{DOMAIN}/u/abc",
        list_unsubscribe_mailto=f"mailto:unsubscribe@{DOMAIN}?subject=abc",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def signatures(data: bytes) -> list[dict[bytes, bytes]]:
    """The tags of every DKIM-Signature field, top first."""
    header = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b"").replace(b"\r\n ", b" ")
    fields = [line for line in header.split(b"\r\n") if line.startswith(b"DKIM-Signature:")]
    return [parse_tag_value(f.split(b":", 1)[1]) for f in fields]


def verdicts(data: bytes) -> list[bool]:
    """dkimpy's verdict on each signature (idx 0 is the top one)."""
    count = len(signatures(data))
    return [bool(dkim.DKIM(data).verify(idx=i, dnsfunc=dns)) for i in range(count)]


@pytest.mark.parametrize(
    ("pem", "selector", "algorithm"), [(RSA_PEM, RSA_SELECTOR, b"rsa-sha256"), (ED_PEM, ED_SELECTOR, b"ed25519-sha256")]
)
def test_each_key_type_alone_signs_a_message_dkimpy_verifies(pem: bytes, selector: str, algorithm: bytes) -> None:
    signer = DkimSigner(pem, selector, DOMAIN)
    signed = build_mime(message(), date=DATE, signer=signer)
    [tags] = signatures(signed)
    assert tags[b"a"] == algorithm and tags[b"s"] == selector.encode()
    assert verdicts(signed) == [True]
    tampered = signed.replace(f"<https://{DOMAIN}/u/abc>".encode(), b"<https://evil.example/u/abc>")
    assert tampered != signed and verdicts(tampered) == [False]


def test_our_ed25519_signature_equals_dkimpys_own_for_the_same_input(monkeypatch: pytest.MonkeyPatch) -> None:
    unsigned = build_mime(message(), date=DATE)
    ours = DkimSigner(ED_PEM, ED_SELECTOR, DOMAIN).sign(unsigned, timestamp=1714548600)
    monkeypatch.setattr(dkim.time, "time", lambda: 1714548600.25)  # dkimpy reads the clock for t=
    seed = ED_KEY.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    theirs = dkim.sign(
        unsigned,
        ED_SELECTOR.encode(),
        DOMAIN.encode(),
        base64.b64encode(seed),  # dkimpy takes the raw 32-byte seed, base64 (RFC 8463 §4)
        signature_algorithm=b"ed25519-sha256",
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.encode() for h in DEFAULT_SIGNED_HEADERS],
    )
    assert ours == theirs  # Ed25519 is deterministic (RFC 8032 §5.1.6), so the bytes must match


def test_two_signers_sign_like_each_alone_with_one_body_hash() -> None:
    rsa_signer, ed_signer = DkimSigner(RSA_PEM, RSA_SELECTOR, DOMAIN), DkimSigner(ED_PEM, ED_SELECTOR, DOMAIN)
    unsigned = build_mime(message(), date=DATE)
    both = DkimSigners([rsa_signer, ed_signer]).sign(unsigned, timestamp=1714548600)
    assert both == rsa_signer.sign(unsigned, timestamp=1714548600) + ed_signer.sign(unsigned, timestamp=1714548600)
    with pytest.raises(ValueError):
        DkimSigners([])


def test_both_keys_from_settings_sign_every_sent_email_and_an_altered_list_unsubscribe_breaks_both(
    tmp_path: Path,
) -> None:
    (tmp_path / "rsa.pem").write_bytes(RSA_PEM)
    (tmp_path / "ed.pem").write_bytes(ED_PEM)
    clock = FileClock(tmp_path / "clock")
    # Start at the real time: dkimpy refuses a signature whose t= lies in the future.
    clock.set(datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=3))
    with SmtpSink() as sink:
        env = cadence_env(
            tmp_path,
            CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
            CADENCE_EMAIL_URL=f"smtp://{sink.host}:{sink.port}?tls=none",
            CADENCE_CLOCK=str(clock),
            CADENCE_BASE_URL=f"https://news.{DOMAIN}",
            CADENCE_DKIM_KEY_FILE=str(tmp_path / "rsa.pem"),
            CADENCE_DKIM_SELECTOR=RSA_SELECTOR,
            CADENCE_DKIM_ED25519_KEY_FILE=str(tmp_path / "ed.pem"),
            CADENCE_DKIM_ED25519_SELECTOR=ED_SELECTOR,
            CADENCE_DKIM_DOMAIN=DOMAIN,
        )
        settings = load_settings(env)
        upgrade(settings.database_url)
        runtime = Runtime.from_settings(settings)
        people = [SubscriberInput("trail@example.com", "Tess", "America/New_York", {"terrain": "trails"})]
        with transaction(settings.database_url) as session:
            import_subscribers(session, people, clock.now(), keys=TEST_KEYS)
            subscribers = list(session.scalars(select(Subscriber)))
            enrollment.enroll(session, runtime.catalog.get("lower-back-pain"), subscribers, clock.now())
        for _ in range(48):  # step 1 goes out at the subscriber's send hour: within two days
            for batch in enrollment.tick(runtime).batches:
                enrollment.deliver(runtime, batch)
            if sink.messages:
                break
            clock.advance(timedelta(hours=1))
        runtime.close()
        [received] = sink.wait_for(1)
    data = received.data
    assert [(t[b"a"], t[b"s"]) for t in signatures(data)] == [
        (b"rsa-sha256", RSA_SELECTOR.encode()),
        (b"ed25519-sha256", ED_SELECTOR.encode()),
    ]
    assert verdicts(data) == [True, True]
    tampered = data.replace(b"List-Unsubscribe: <https://", b"List-Unsubscribe: <https://evil.example/x?", 1)
    assert tampered != data and verdicts(tampered) == [False, False]


def test_an_ed25519_key_alone_needs_no_rsa_settings(tmp_path: Path) -> None:
    (tmp_path / "ed.pem").write_bytes(ED_PEM)
    env = cadence_env(
        tmp_path,
        CADENCE_DKIM_ED25519_KEY_FILE=str(tmp_path / "ed.pem"),
        CADENCE_DKIM_ED25519_SELECTOR=ED_SELECTOR,
        CADENCE_DKIM_DOMAIN=DOMAIN,
    )
    signer = Runtime.from_settings(load_settings(env)).signer
    assert isinstance(signer, DkimSigner) and signer.algorithm == "ed25519-sha256"


def _bad_settings(tmp: Path) -> list[tuple[dict[str, str], str]]:
    (tmp / "rsa.pem").write_bytes(RSA_PEM)
    (tmp / "ed.pem").write_bytes(ED_PEM)
    (tmp / "junk.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    rsa_ok = {"CADENCE_DKIM_KEY_FILE": str(tmp / "rsa.pem"), "CADENCE_DKIM_SELECTOR": RSA_SELECTOR}
    ed_ok = {"CADENCE_DKIM_ED25519_KEY_FILE": str(tmp / "ed.pem"), "CADENCE_DKIM_ED25519_SELECTOR": ED_SELECTOR}
    domain = {"CADENCE_DKIM_DOMAIN": DOMAIN}
    return [
        ({**rsa_ok, **domain, "CADENCE_DKIM_KEY_FILE": str(tmp / "ed.pem")}, "CADENCE_DKIM_KEY_FILE: "),
        ({**ed_ok, **domain, "CADENCE_DKIM_ED25519_KEY_FILE": str(tmp / "rsa.pem")}, "CADENCE_DKIM_ED25519_KEY_FILE: "),
        ({**rsa_ok, **ed_ok, **domain, "CADENCE_DKIM_ED25519_KEY_FILE": str(tmp / "none.pem")},
         "CADENCE_DKIM_ED25519_KEY_FILE: cannot read"),
        ({**ed_ok, **domain, "CADENCE_DKIM_ED25519_KEY_FILE": str(tmp / "junk.pem")},
         "CADENCE_DKIM_ED25519_KEY_FILE: "),
        ({**ed_ok, **domain, "CADENCE_DKIM_ED25519_SELECTOR": ""}, "CADENCE_DKIM_ED25519_SELECTOR: required"),
        ({**ed_ok}, "CADENCE_DKIM_DOMAIN: required"),
        ({**rsa_ok, **ed_ok, **domain, "CADENCE_DKIM_ED25519_SELECTOR": RSA_SELECTOR},
         "CADENCE_DKIM_ED25519_SELECTOR: must differ"),
    ]  # fmt: skip


def test_bad_dkim_settings_are_one_clear_error_naming_the_variable(tmp_path: Path) -> None:
    for overrides, expected in _bad_settings(tmp_path):
        with pytest.raises(ConfigError, match=f"^{expected}"):
            load_settings(cadence_env(tmp_path, **overrides))


def test_bad_dkim_settings_stop_the_installed_command_with_that_one_line(tmp_path: Path) -> None:
    cases = _bad_settings(tmp_path)
    for overrides, expected in (cases[0], cases[2]):  # a wrong key type; a file that is not there
        run = subprocess.run(
            [CADENCE, "doctor"], env=cadence_env(tmp_path, **overrides), capture_output=True, text=True, timeout=120
        )
        assert run.returncode != 0
        assert "Traceback" not in run.stdout + run.stderr
        assert run.stderr.strip().splitlines() == [run.stderr.strip()]  # one line
        assert expected in run.stderr
    wrong_type = subprocess.run(
        [CADENCE, "doctor"], env=cadence_env(tmp_path, **cases[0][0]), capture_output=True, text=True, timeout=120
    )
    assert "holds an Ed25519 key; put it in CADENCE_DKIM_ED25519_KEY_FILE" in wrong_type.stderr


def test_doctor_checks_the_dns_record_of_each_key(tmp_path: Path) -> None:
    """Both keys configured, only the RSA one published: one pass, one fail telling what to publish."""
    (tmp_path / "rsa.pem").write_bytes(RSA_PEM)
    (tmp_path / "ed.pem").write_bytes(ED_PEM)
    rsa_name = f"{RSA_SELECTOR}._domainkey.{DOMAIN}"
    zone = {rsa_name: {"TXT": [records()[f"{rsa_name}.".encode()].decode()]}}
    with DnsServer(zone) as dns_server:
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DKIM_KEY_FILE=str(tmp_path / "rsa.pem"),
            CADENCE_DKIM_SELECTOR=RSA_SELECTOR,
            CADENCE_DKIM_ED25519_KEY_FILE=str(tmp_path / "ed.pem"),
            CADENCE_DKIM_ED25519_SELECTOR=ED_SELECTOR,
            CADENCE_DKIM_DOMAIN=DOMAIN,
            CADENCE_DNS_RESOLVER=dns_server.address,
            CADENCE_EMAIL_URL="smtp://127.0.0.1:1?tls=none",  # the DNS checks run for SMTP senders
        )
        run = subprocess.run([CADENCE, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stdout + run.stderr
    lines = [line.strip() for line in run.stdout.splitlines() if "DKIM key" in line]
    assert any(line.startswith("PASS") and rsa_name in line for line in lines), run.stdout
    assert any(line.startswith("FAIL") and f"no DKIM record at {ED_SELECTOR}._domainkey" in line for line in lines)
    raw = ED_KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert f"k=ed25519; p={base64.b64encode(raw).decode()}" in run.stdout  # the fix: what to publish
    assert run.returncode != 0
