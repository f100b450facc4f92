"""``cadence doctor`` through the installed command, against a real DNS server on loopback
(tests/support/dns_server.py), real SMTP servers (aiosmtpd, with and without STARTTLS/AUTH), a
real Redis, a real ``cadence web`` and a SQLite database, in good and bad setups."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cadence.config import load_settings
from cadence.db.migrate import upgrade
from tests.support.cluster import cadence_env, processes
from tests.support.dns_server import DnsServer
from tests.support.smtpd import SmtpSink, make_tls
from tests.support.web import free_port

pytestmark = pytest.mark.slow
CADENCE = str(Path(sys.executable).with_name("cadence"))
DOMAIN = "precisionbodywork.example"  # the From domain of campaigns/lower-back-pain.yaml
SECRET = "a-long-random-secret-key-for-doctor-tests-0123456789"


def rsa_key(path: Path) -> str:
    """Write a new private key to `path`; return the p= value its DNS record must carry."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def doctor(env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Run `cadence doctor`: (exit status, {check name: its status and detail line}, all output)."""
    run = subprocess.run([CADENCE, "doctor"], env=env, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert "Traceback" not in output
    lines = {}
    for line in run.stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status.strip() in ("PASS", "WARN", "FAIL"):
            name = rest.strip().split(": ", 1)[0]
            lines[name] = f"{status.strip()} {rest.strip()}"
    return run.returncode, lines, output


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    pair = make_tls()
    ca = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.write_bytes(pair.cert_pem)
    yield pair, ca


def test_a_good_setup_passes_with_only_the_local_development_warnings(
    tmp_path: Path, redis_url: str, tls: tuple[object, Path]
) -> None:
    pair, ca = tls
    p = rsa_key(tmp_path / "dkim.pem")
    zone = {
        DOMAIN: {
            "TXT": ["google-site-verification=abc", "v=spf1 mx include:_spf.relay.example -all"],
            "MX": [f"10 mx.{DOMAIN}."],
        },
        f"mx.{DOMAIN}": {"A": ["192.0.2.25"]},
        "_spf.relay.example": {"TXT": ["v=spf1 ip4:127.0.0.0/8 ~all"]},
        f"s1._domainkey.{DOMAIN}": {"TXT": [f"v=DKIM1; k=rsa; p={p}"]},  # over 255 bytes: split strings
        f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@" + DOMAIN]},
    }
    port = free_port()
    with (
        DnsServer(zone) as dns,
        SmtpSink(tls=pair, auth=("cadence", "s3cret-pass")) as sink,  # type: ignore[arg-type]
        processes(tmp_path / "logs") as procs,
    ):
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'cadence.db'}",
            CADENCE_BROKER_URL=redis_url,
            CADENCE_EMAIL_URL=f"smtp://cadence:s3cret-pass@127.0.0.1:{sink.port}?tls=starttls",
            CADENCE_BASE_URL=f"http://127.0.0.1:{port}",
            CADENCE_SECRET_KEY=SECRET,
            CADENCE_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
            CADENCE_DKIM_SELECTOR="s1",
            CADENCE_DKIM_DOMAIN=DOMAIN,
            CADENCE_DNS_RESOLVER=dns.address,
            SSL_CERT_FILE=str(ca),  # trust the test relay's self-signed certificate
        )
        upgrade(load_settings(env).database_url)
        procs.start("web", ["web", "--port", str(port), "--log-level", "warning"], env)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        status, checks, output = doctor(env)

    assert status == 0, output
    assert checks["secret key"].startswith("PASS")
    assert checks["database schema"].startswith("PASS")
    assert checks["broker"].startswith("PASS")
    assert checks["SMTP relay"] == f"PASS SMTP relay: 127.0.0.1:{sink.port}: connected, STARTTLS, AUTH"
    assert checks["DKIM key"].startswith("PASS")
    assert checks[f"SPF {DOMAIN}"].startswith("PASS")
    assert checks[f"DMARC {DOMAIN}"] == f"PASS DMARC {DOMAIN}: p=quarantine"
    # Local http is a development setup: warned about, not failed.
    assert checks["base URL"].startswith("WARN")
    assert checks["List-Unsubscribe"].startswith("WARN")
    assert "s3cret-pass" not in output
    assert sink.messages == []  # the doctor sends nothing


def test_a_bad_setup_fails_each_check_with_its_fix(tmp_path: Path) -> None:
    rsa_key(tmp_path / "dkim.pem")
    other = rsa_key(tmp_path / "other.pem")
    zone = {
        DOMAIN: {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
        f"s1._domainkey.{DOMAIN}": {"TXT": [f"v=DKIM1; k=rsa; p={other}"]},  # another key
        # no _dmarc record
    }
    with DnsServer(zone) as dns, SmtpSink() as plain:  # no STARTTLS
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DATABASE_URL=f"sqlite:///{tmp_path / 'never-migrated.db'}",
            CADENCE_BROKER_URL="redis://127.0.0.1:1/0",
            CADENCE_EMAIL_URL=f"smtp://127.0.0.1:{plain.port}",  # STARTTLS required by default
            CADENCE_BASE_URL=f"http://127.0.0.2:{free_port()}",  # plain http, and nothing answers
            CADENCE_SECRET_KEY=SECRET,
            CADENCE_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
            CADENCE_DKIM_SELECTOR="s1",
            CADENCE_DKIM_DOMAIN=DOMAIN,
            CADENCE_DNS_RESOLVER=dns.address,
        )
        status, checks, output = doctor(env)

    assert status == 1
    expected = {
        "database schema": "run `cadence db upgrade`",
        "broker": "check CADENCE_BROKER_URL",
        "SMTP relay": "enable STARTTLS on the relay",
        "base URL": "set CADENCE_BASE_URL=https://",
        "DKIM key": 'publish TXT "v=DKIM1; k=rsa; p=',
        f"SPF {DOMAIN}": "add the relay to the record, e.g. ip4:127.0.0.1",
        f"DMARC {DOMAIN}": f'publish TXT "v=DMARC1; p=none; rua=mailto:dmarc@{DOMAIN}" at _dmarc.{DOMAIN}',
        "List-Unsubscribe": "run `cadence web` where CADENCE_BASE_URL points",
    }
    for name, fix in expected.items():
        assert checks[name].startswith("FAIL"), (name, output)
        assert fix in output, (name, output)
    assert "does not match dkim.pem" in checks["DKIM key"]
    assert "does not offer STARTTLS" in checks["SMTP relay"]


def test_refused_credentials_and_a_monitoring_only_dmarc_policy(tmp_path: Path, tls: tuple[object, Path]) -> None:
    pair, ca = tls
    zone = {
        DOMAIN: {"TXT": ["v=spf1 a:relay.example/24 -all"]},
        "relay.example": {"A": ["127.0.0.9"]},
        f"_dmarc.{DOMAIN}": {"TXT": ["v=DMARC1; p=none"]},
    }
    with DnsServer(zone) as dns, SmtpSink(tls=pair, auth=("cadence", "right")) as sink:  # type: ignore[arg-type]
        env = cadence_env(
            tmp_path / "data",
            CADENCE_EMAIL_URL=f"smtp://cadence:wrong@127.0.0.1:{sink.port}",
            CADENCE_DNS_RESOLVER=dns.address,
            SSL_CERT_FILE=str(ca),
        )
        status, checks, output = doctor(env)
    assert status == 1
    assert checks["SMTP relay"].startswith("FAIL") and "refused the credentials (535" in checks["SMTP relay"]
    assert "wrong" not in output
    assert checks[f"SPF {DOMAIN}"].startswith("PASS"), output  # a:relay.example/24 covers 127.0.0.1
    assert checks[f"DMARC {DOMAIN}"] == f"WARN DMARC {DOMAIN}: p=none: monitoring only"
    assert checks["DKIM key"].startswith("WARN")  # not signing


def test_a_dkim_domain_that_does_not_align_with_the_from_domain_is_warned_about(tmp_path: Path) -> None:
    p = rsa_key(tmp_path / "dkim.pem")
    zone = {"s1._domainkey.esp.example": {"TXT": [f"v=DKIM1; k=rsa; p={p}"]}}
    with DnsServer(zone) as dns:
        env = cadence_env(
            tmp_path / "data",
            CADENCE_DKIM_KEY_FILE=str(tmp_path / "dkim.pem"),
            CADENCE_DKIM_SELECTOR="s1",
            CADENCE_DKIM_DOMAIN="esp.example",
            CADENCE_DNS_RESOLVER=dns.address,
        )
        env["CADENCE_EMAIL_URL"] = "smtp://127.0.0.1:1?tls=none"  # the DNS checks run for SMTP senders
        _, checks, output = doctor(env)
    assert checks["DKIM key"].startswith("PASS"), output
    alignment = checks[f"DKIM alignment {DOMAIN}"]
    assert alignment.startswith("WARN") and "d=esp.example does not align" in alignment
    assert f"fix: sign with CADENCE_DKIM_DOMAIN={DOMAIN}" in output


def test_the_outbox_is_named_as_such_and_a_local_web_not_running_is_only_a_warning(tmp_path: Path) -> None:
    env = cadence_env(
        tmp_path / "data",
        CADENCE_EMAIL_URL="outbox://",
        CADENCE_BASE_URL=f"http://127.0.0.1:{free_port()}",  # local, and `cadence web` not started
        CADENCE_SECRET_KEY=SECRET,
    )
    upgrade(load_settings(env).database_url)
    status, checks, output = doctor(env)
    assert "SMTP relay" not in checks, output  # nothing is relayed: no "PASS SMTP relay"
    assert checks["outbox"] == f"PASS outbox: emails are written to {tmp_path / 'data' / 'outbox'}, not sent " + (
        "(set CADENCE_EMAIL_URL=smtp://... to send)"
    )
    assert checks["List-Unsubscribe"].startswith("WARN") and "cadence web is not running" in checks["List-Unsubscribe"]
    assert "fix: start `cadence web`" in output
    assert status == 0, output
