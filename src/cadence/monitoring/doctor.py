"""``cadence doctor``: the configuration and the world around it, each check pass / warn / fail
with the fix (docs/operations.md). No email is sent and no data changed.

Order: what Cadence itself needs (secret key, base URL, database schema, broker), then the way
out (the SMTP relay: reachable, STARTTLS, AUTH), then what receivers check (DKIM, SPF and DMARC
of each campaign's From domain, and RFC 8058 one-click unsubscribe).
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from cadence.config import Settings
from cadence.errors import CadenceError
from cadence.files.catalog import CampaignCatalog
from cadence.monitoring.dns_checks import DnsLookup, check_domains
from cadence.monitoring.health import PROBE_TIMEOUT, Check, check_broker, check_schema, passed, safe_url

_LOCAL = {"localhost", "127.0.0.1", "::1"}


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order above."""
    checks = [check_secret_key(settings), check_base_url(settings), check_schema(settings), check_broker(settings)]
    checks.append(check_transport(settings))
    domains, problem = _sender_domains(settings)
    if problem is not None:
        checks.append(problem)
    relay = _smtp_host(settings.email_url)
    dkim = [(k.key_file, k.selector, settings.dkim.domain) for k in settings.dkim.keys] if settings.dkim else []
    if relay is None and not settings.email_url.startswith(("postmark", "mailgun")):
        checks.append(Check("DNS", "warn", f"not sending by SMTP or a provider ({settings.email_url})", ""))
    else:
        lookup = DnsLookup(settings.dns_resolver)
        checks += check_domains(lookup, domains, relay, dkim)
    checks.append(check_list_unsubscribe(settings))
    checks.append(check_held_campaigns(settings))
    return checks


def check_held_campaigns(settings: Settings) -> Check:
    """Campaigns with people in them whose file is missing or broken: their emails wait (issue 13)."""
    from cadence.db.session import DatabaseError
    from cadence.operations.holds import held_by_file

    name = "held campaigns"
    try:
        held = held_by_file(settings)
    except (DatabaseError, OSError) as exc:
        return Check(name, "warn", f"cannot read the database: {type(exc).__name__}", "see the database schema check")
    if not held:
        return passed(name, "every campaign with people in it has a readable file")
    detail = "; ".join(f"{cid}: {why}" for cid, why in held.items())
    return Check(name, "warn", f"emails wait, nothing is sent for: {detail}", "put the campaign file back (or fix it)")


def check_secret_key(settings: Settings) -> Check:
    name = "secret key"
    generated = settings.data_dir / "secret_key"
    if generated.is_file() and generated.read_text().strip() == settings.secret_key:
        return Check(
            name,
            "warn",
            f"generated into {generated} (fine on one machine)",
            "set CADENCE_SECRET_KEY to the same long random string on every worker and web process",
        )
    if len(settings.secret_key) < 32:
        return Check(name, "warn", f"only {len(settings.secret_key)} characters", "use 32 or more random characters")
    return passed(name, "CADENCE_SECRET_KEY is set")


def check_base_url(settings: Settings) -> Check:
    name = "base URL"
    parts = urlsplit(settings.base_url)
    if parts.scheme == "https":
        return passed(name, f"{settings.base_url} is https")
    if (parts.hostname or "") in _LOCAL:
        return Check(name, "warn", f"{settings.base_url} is local http (development only)", "https in production")
    return Check(
        name,
        "fail",
        f"{settings.base_url} is http: unsubscribe and preference links would travel in clear",
        "serve cadence web behind TLS and set CADENCE_BASE_URL=https://...",
    )


def _smtp_host(email_url: str) -> str | None:
    parts = urlsplit(email_url)
    return parts.hostname if parts.scheme in ("smtp", "smtps") else None


def check_transport(settings: Settings) -> Check:
    """The way out: an SMTP relay is probed (:func:`check_smtp`); the outbox sends nothing, and
    says where its files go, so nobody reads "PASS SMTP relay" and waits for emails that are
    only written to a folder."""
    parts = urlsplit(settings.email_url)
    scheme = parts.scheme.lower()
    if scheme == "outbox":
        folder = Path(unquote(parts.path)) if parts.path not in ("", "/") else settings.outbox_dir
        detail = f"emails are written to {folder}, not sent"
        if settings.base_url.startswith("https://"):
            return Check("outbox", "warn", detail, "set CADENCE_EMAIL_URL=smtp://... (or a provider) to send them")
        return passed("outbox", f"{detail} (set CADENCE_EMAIL_URL=smtp://... to send)")
    if scheme in ("postmark", "mailgun"):
        return passed("email provider", f"sending through {scheme} (HTTP API)")
    return check_smtp(settings.email_url)


def check_smtp(email_url: str) -> Check:
    """Connect to the relay as the worker will: STARTTLS when asked for (certificate verified),
    then AUTH with the URL's credentials. Sends no mail."""
    name = "SMTP relay"
    parts = urlsplit(email_url)
    if parts.scheme not in ("smtp", "smtps"):
        return Check(name, "pass", f"not sending by SMTP ({parts.scheme}://)")
    try:
        params = dict(parse_qsl(parts.query))
        port = parts.port
    except ValueError as exc:
        return Check(name, "fail", f"cannot parse CADENCE_EMAIL_URL: {exc}", "see the README's table")
    host = parts.hostname or ""
    tls = "implicit" if parts.scheme == "smtps" else params.get("tls", "starttls")
    port = port or (465 if tls == "implicit" else 587 if tls == "starttls" else 25)
    where = f"{host}:{port}"
    context = ssl.create_default_context()
    steps = []
    try:
        smtp: smtplib.SMTP
        if tls == "implicit":
            smtp = smtplib.SMTP_SSL(host, port, timeout=PROBE_TIMEOUT, context=context)
            steps.append("TLS")
        else:
            smtp = smtplib.SMTP(host, port, timeout=PROBE_TIMEOUT)
        with smtp:
            smtp.ehlo()
            if tls == "starttls":
                if not smtp.has_extn("starttls"):
                    fix = "enable STARTTLS on the relay, or ?tls=none for a loopback relay only"
                    return Check(name, "fail", f"{where} does not offer STARTTLS", fix)
                smtp.starttls(context=context)
                smtp.ehlo()
                steps.append("STARTTLS")
            elif tls == "none" and host not in _LOCAL:
                steps.append("no TLS")
            if parts.username is not None:
                if not smtp.has_extn("auth"):
                    return Check(name, "fail", f"{where} does not offer AUTH", "use the relay's submission port (587)")
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
                steps.append("AUTH")
    except ssl.SSLCertVerificationError as exc:
        return Check(
            name, "fail", f"TLS certificate of {host} not trusted: {exc.verify_message}", "fix the certificate"
        )
    except smtplib.SMTPAuthenticationError as exc:
        reply = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return Check(
            name, "fail", f"{where} refused the credentials ({exc.smtp_code} {reply})", "fix the user:password"
        )
    except (smtplib.SMTPException, OSError) as exc:  # socket.timeout is an OSError
        fix = "check the host and port in CADENCE_EMAIL_URL and the firewall"
        return Check(name, "fail", f"cannot talk to {where}: {exc or type(exc).__name__}", fix)
    if "no TLS" in steps:
        return Check(name, "warn", f"{where}: plain SMTP to a remote host", "use ?tls=starttls or smtps://")
    return passed(name, f"{where}: " + ", ".join(["connected", *steps]))


def _sender_domains(settings: Settings) -> tuple[list[str], Check | None]:
    try:
        campaigns = CampaignCatalog(settings.campaigns_dir, settings.templates_dir).all()
    except CadenceError as exc:
        return [], Check("campaigns", "fail", str(exc), "run `cadence campaigns validate NAME`")
    domains = sorted({c.sender_email.rsplit("@", 1)[1].lower() for c in campaigns})
    if not domains:
        return [], Check("campaigns", "warn", f"no campaigns in {settings.campaigns_dir}", "")
    return domains, None


def check_list_unsubscribe(settings: Settings) -> Check:
    """RFC 8058 one-click unsubscribe works only if the https link answers and the
    List-Unsubscribe headers are covered by a DKIM signature (§3.1, §4)."""
    name = "List-Unsubscribe"
    url = settings.base_url + "/healthz"
    try:
        answer = requests.get(url, timeout=PROBE_TIMEOUT, allow_redirects=False)
        reachable = answer.status_code == 200
        why = f"HTTP {answer.status_code}"
    except requests.RequestException as exc:
        reachable, why = False, type(exc).__name__
    if not reachable and (urlsplit(settings.base_url).hostname or "") in _LOCAL:
        # A local setup where `cadence web` is simply not started (yet): nothing is broken,
        # but links in emails sent now would not answer until it is.
        fix = "start `cadence web` (in another terminal) before sending, so unsubscribe links answer"
        return Check(name, "warn", f"{safe_url(url)} does not answer ({why}): cadence web is not running", fix)
    if not reachable:
        fix = "run `cadence web` where CADENCE_BASE_URL points (reverse proxy: docs/deploy.md)"
        return Check(name, "fail", f"{safe_url(url)} does not answer ({why}): unsubscribe links would be dead", fix)
    if not settings.base_url.startswith("https://"):
        return Check(name, "warn", "one-click unsubscribe needs an https link (RFC 8058 §3.1)", "serve https")
    if settings.dkim is None:
        return Check(name, "warn", "headers not DKIM-signed by Cadence (RFC 8058 §4)", "set CADENCE_DKIM_*")
    return passed(name, f"{settings.base_url} answers; headers DKIM-signed")
