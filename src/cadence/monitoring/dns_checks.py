"""The sending domain's DNS, as receivers see it: DKIM key, SPF, DMARC (``cadence doctor``).

Queries go through dnspython, to the system's resolver or to ``CADENCE_DNS_RESOLVER``
(HOST[:PORT]): an operator can ask the domain's authoritative server directly right after a
change, before caches expire, and the tests ask a DNS server of their own on loopback.

Since February 2024 Gmail and Yahoo require bulk senders to pass SPF or DKIM aligned with the
From domain and to publish a DMARC record (p=none at least); unsubscribe links must be one-click
(RFC 8058). These checks say which of that is in place.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cadence.monitoring.health import Check, passed

_TIMEOUT = 5.0
_MAX_LOOKUPS = 10  # RFC 7208 §4.6.4: more DNS-querying terms than this is a permerror


class DnsLookup:
    """TXT, A/AAAA and MX look-ups with one resolver; NXDOMAIN and no answer are empty lists."""

    def __init__(self, server: tuple[str, int] | None = None) -> None:
        if server is None:
            self.resolver = dns.resolver.Resolver()
        else:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [server[0]]
            self.resolver.port = server[1]
        self.resolver.lifetime = _TIMEOUT

    def _query(self, name: str, rdtype: str) -> list[object]:
        try:
            return list(self.resolver.resolve(name, rdtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []

    def txt(self, name: str) -> list[str]:
        # A TXT record may be split into 255-byte strings; receivers join them (RFC 7208 §3.3).
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(name, "TXT")]  # type: ignore[attr-defined]

    def addresses(self, name: str) -> list[str]:
        return [r.address for t in ("A", "AAAA") for r in self._query(name, t)]  # type: ignore[attr-defined]

    def mx(self, name: str) -> list[str]:
        return [str(r.exchange).rstrip(".") for r in self._query(name, "MX")]  # type: ignore[attr-defined]


def _dns_failure(name: str, what: str, exc: Exception) -> Check:
    return Check(name, "fail", f"cannot look up {what}: {exc}", "check CADENCE_DNS_RESOLVER or the network")


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


# ---------------------------------------------------------------------------- DKIM


def public_key_of(private_pem: bytes) -> tuple[str, str]:
    """(k= key type, p= base64) the DNS record must publish for this private key (RFC 6376
    §3.6.1: RSA as SubjectPublicKeyInfo DER; RFC 8463: Ed25519 as the raw 32 bytes)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", base64.b64encode(raw).decode()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "rsa", base64.b64encode(der).decode()


def check_dkim(lookup: DnsLookup, key_file: Path, selector: str, domain: str) -> Check:
    name = "DKIM key"
    where = f"{selector}._domainkey.{domain}"
    try:
        kind, expected = public_key_of(key_file.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        return Check(
            name, "fail", f"cannot read the private key {key_file}: {exc}", "point CADENCE_DKIM_KEY_FILE at a PEM key"
        )
    try:
        records = [r for r in lookup.txt(where) if "p=" in r]
    except dns.exception.DNSException as exc:
        return _dns_failure(name, where, exc)
    publish = f'publish TXT "v=DKIM1; k={kind}; p={expected}" at {where}'
    if not records:
        return Check(name, "fail", f"no DKIM record at {where}", publish)
    published = [_tags(r) for r in records]
    if any(t.get("p") == expected for t in published):
        return passed(name, f"{where} publishes the public key of {key_file.name}")
    if any(t.get("p") == "" for t in published):
        return Check(name, "fail", f"the key at {where} is revoked (empty p=)", publish)
    return Check(name, "fail", f"the key at {where} does not match {key_file.name}", publish)


# ---------------------------------------------------------------------------- SPF


class _SpfError(Exception):
    pass


def spf_record(lookup: DnsLookup, domain: str) -> str | None:
    records = [r for r in lookup.txt(domain) if r.lower().startswith("v=spf1") and r[6:7] in ("", " ")]
    if len(records) > 1:
        raise _SpfError(f"{domain} publishes {len(records)} SPF records (RFC 7208 §4.5: a permerror)")
    return records[0] if records else None


def spf_verdict(lookup: DnsLookup, domain: str, ip: str, lookups: list[int] | None = None) -> str:
    """RFC 7208 check_host() for `ip` sending as `domain`: pass, fail, softfail, neutral, none.
    Supports all, ip4, ip6, a, mx, include and redirect= (exists and ptr never match here);
    raises _SpfError for a permerror."""
    lookups = lookups if lookups is not None else [0]
    record = spf_record(lookup, domain)
    if record is None:
        return "none"
    address = ipaddress.ip_address(ip)
    redirect = None
    for term in record.split()[1:]:
        if term.lower().startswith("redirect="):
            redirect = term.split("=", 1)[1]
            continue
        if "=" in term.split(":", 1)[0]:
            continue  # another modifier (exp=)
        qualifier = term[0] if term[0] in "+-~?" else "+"
        mechanism = term.lstrip("+-~?")
        kind, _, arg = mechanism.partition(":")
        kind, _, cidr = kind.partition("/") if not arg else (kind, "", "")
        if arg and "/" in arg and kind.lower() in ("a", "mx"):
            arg, _, cidr = arg.partition("/")
        kind = kind.lower()
        if kind in ("a", "mx", "include", "exists", "ptr"):
            lookups[0] += 1
            if lookups[0] > _MAX_LOOKUPS:
                raise _SpfError(f"more than {_MAX_LOOKUPS} DNS look-ups (RFC 7208 §4.6.4)")
        if _spf_matches(lookup, kind, arg or domain, cidr, mechanism, address, lookups):
            return {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}[qualifier]
    if redirect:
        lookups[0] += 1
        return spf_verdict(lookup, redirect, ip, lookups)
    return "neutral"


def _spf_matches(
    lookup: DnsLookup,
    kind: str,
    target: str,
    cidr: str,
    mechanism: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    lookups: list[int],
) -> bool:
    if kind == "all":
        return True
    if kind in ("ip4", "ip6"):
        network = mechanism.split(":", 1)[1]
        try:
            return address in ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            raise _SpfError(f"bad {kind} {network!r}") from exc
    if kind == "include":
        verdict = spf_verdict(lookup, target, str(address), lookups)
        if verdict == "none":
            raise _SpfError(f"include:{target} has no SPF record")
        return verdict == "pass"
    if kind in ("a", "mx"):
        hosts = [target] if kind == "a" else lookup.mx(target)
        prefix = int(cidr) if cidr.isdigit() else (32 if address.version == 4 else 128)
        for host in hosts:
            for found in lookup.addresses(host):
                block = ipaddress.ip_network(f"{found}/{prefix}", strict=False)
                if block.version == address.version and address in block:
                    return True
        return False
    return False  # exists, ptr: not evaluated (ptr is deprecated, RFC 7208 §5.5)


def sending_addresses(host: str) -> list[str]:
    """The IP addresses `host` (the SMTP relay) resolves to on this machine."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def check_spf(lookup: DnsLookup, domain: str, relay: str | None) -> Check:
    """`domain` publishes SPF, and it authorises the relay's addresses (`relay`: the SMTP host;
    None for an HTTP provider, whose own include: the operator must add)."""
    name = f"SPF {domain}"
    try:
        record = spf_record(lookup, domain)
        if record is None:
            return Check(
                name, "fail", f"{domain} publishes no SPF record", f'publish TXT "v=spf1 ... -all" at {domain}'
            )
        if relay is None:
            return Check(
                name, "warn", f"{record!r}; sending through an HTTP provider", "check it has the provider's include:"
            )
        ips = sending_addresses(relay)
        if not ips:
            return Check(name, "fail", f"cannot resolve the SMTP host {relay}", "check CADENCE_EMAIL_URL")
        verdicts = {ip: spf_verdict(lookup, domain, ip) for ip in ips}
    except _SpfError as exc:
        return Check(name, "fail", f"SPF of {domain} is broken: {exc}", "fix the record (RFC 7208)")
    except dns.exception.DNSException as exc:
        return _dns_failure(name, domain, exc)
    refused = [f"{ip} ({verdict})" for ip, verdict in verdicts.items() if verdict != "pass"]
    if refused:
        fix = f"add the relay to the record, e.g. ip4:{ips[0]} or the provider's include:"
        return Check(name, "fail", f"{record!r} does not authorise {relay}: {', '.join(refused)}", fix)
    return passed(name, f"{record!r} authorises {relay} ({', '.join(ips)})")


# ---------------------------------------------------------------------------- DMARC


def check_dmarc(lookup: DnsLookup, domain: str) -> Check:
    name = f"DMARC {domain}"
    where = f"_dmarc.{domain}"
    try:
        records = [r for r in lookup.txt(where) if r.replace(" ", "").upper().startswith("V=DMARC1")]
    except dns.exception.DNSException as exc:
        return _dns_failure(name, where, exc)
    publish = f'publish TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}" at {where}, then tighten p='
    if not records:
        return Check(name, "fail", f"no DMARC record at {where} (Gmail and Yahoo require one of bulk senders)", publish)
    if len(records) > 1:
        return Check(name, "fail", f"{len(records)} DMARC records at {where}: receivers ignore them all", "keep one")
    policy = _tags(records[0]).get("p", "").lower()
    if policy in ("quarantine", "reject"):
        return passed(name, f"p={policy}")
    if policy == "none":
        return Check(name, "warn", "p=none: monitoring only", "move to p=quarantine once reports show SPF/DKIM aligned")
    return Check(name, "fail", f"{records[0]!r} has no valid p= tag", publish)


def check_alignment(dkim_domain: str, from_domain: str) -> Check | None:
    """A warning if the DKIM d= domain is not aligned with the From domain (RFC 7489 §3.1.1,
    relaxed: one is the other or a subdomain of it), so the signature cannot pass DMARC."""
    d, f = dkim_domain.lower().rstrip("."), from_domain.lower()
    if d == f or f.endswith("." + d) or d.endswith("." + f):
        return None
    return Check(
        f"DKIM alignment {from_domain}",
        "warn",
        f"signing as d={d} does not align with From: {from_domain}, so DMARC relies on SPF alone",
        f"sign with CADENCE_DKIM_DOMAIN={from_domain} (or a parent of it)",
    )


def check_domains(
    lookup: DnsLookup, domains: Sequence[str], relay: str | None, dkim: Sequence[tuple[Path, str, str]]
) -> list[Check]:
    """Every DNS check for the sending `domains` (the campaigns' From domains); `dkim` holds
    (key file, selector, domain) per signing key (RSA, Ed25519 or both), empty when unsigned."""
    checks: list[Check] = []
    if not dkim:
        checks.append(
            Check(
                "DKIM key",
                "warn",
                "messages are not DKIM-signed by Cadence",
                "set CADENCE_DKIM_KEY_FILE, _SELECTOR and _DOMAIN (or sign at the relay)",
            )
        )
    else:
        checks += [check_dkim(lookup, *key) for key in dkim]
        checks += [c for c in (check_alignment(dkim[0][2], d) for d in domains) if c is not None]
    for domain in domains:
        checks.append(check_spf(lookup, domain, relay))
        checks.append(check_dmarc(lookup, domain))
    return checks
