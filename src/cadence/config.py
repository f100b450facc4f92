"""Settings from ``CADENCE_*`` environment variables, resolved once.

The only module that reads (or writes) the process environment (issue 12): everything else is
given a :class:`Settings`. The exceptions it owns are documented where they are:
``PROMETHEUS_MULTIPROC_DIR`` (:func:`export_process_metrics_dir`), the environment handed to
child processes (:func:`process_environment`) and ``PYTHONUNBUFFERED``.

Defaults make a fresh checkout work with nothing but Python: SQLite and Celery's filesystem
broker in ``.cadence/``, emails written as ``.eml`` files to ``.cadence/outbox``. Production
sets URLs for PostgreSQL, Redis and SMTP or an HTTP provider. Every error names the variable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from cadence.clock import Clock, clock_from_string
from cadence.errors import ConfigError

__all__ = [
    "PROMETHEUS_DIR_VARIABLE",
    "DkimSettings",
    "Settings",
    "export_process_metrics_dir",
    "export_unbuffered_output",
    "get_settings",
    "load_settings",
    "os_user",
    "process_environment",
    "process_metrics_dir",
]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class DkimKey:
    variable: str  # the setting that names the file, for errors and `cadence doctor`
    key_file: Path
    selector: str
    algorithm: str  # "rsa-sha256" or "ed25519-sha256" (RFC 8463)


@dataclass(frozen=True)
class DkimSettings:
    """One d= domain and one or two keys: RSA, Ed25519, or both (one signature each)."""

    domain: str
    keys: tuple[DkimKey, ...]


# Where `cadence web` listens unless told otherwise (its --host/--port defaults).
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    email_url: str
    base_url: str
    secret_key: str
    campaigns_dir: Path
    templates_dir: Path
    redis_url: str | None
    clock_spec: str = "system"
    # No CADENCE_BASE_URL: links printed outside a request (a console setup link) guess the
    # address `cadence web` has by default, and must say so.
    base_url_is_default: bool = False
    dkim: DkimSettings | None = None
    batch_size: int = 250
    tick_seconds: float = 30.0
    lease_seconds: float = 600.0
    max_attempts: int = 8
    soft_bounce_limit: int = 3
    commit_every: int = 20
    # Reverse proxies whose X-Forwarded-For is believed (addresses or networks); none by default.
    trusted_proxies: tuple[str, ...] = ()
    rate_limit_ipv6_prefix: int = 64
    # Older CADENCE_SECRET_KEY values: erase suppressions hashed under them are still honoured.
    previous_secret_keys: tuple[str, ...] = ()
    metrics_dir: Path | None = None  # None: <data_dir>/metrics
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    log_format: str = "text"
    dns_resolver: tuple[str, int] | None = None
    bounce_imap_url: str = ""  # CADENCE_BOUNCE_IMAP_URL: the mailbox `cadence bounces process --imap` reads
    # Provider webhooks (web/webhooks.py): empty means that webhook answers 503 "not configured".
    postmark_webhook_user: str = ""
    postmark_webhook_password: str = field(default="", repr=False)
    mailgun_webhook_signing_key: str = field(default="", repr=False)
    # The staff console under /admin (issue 14): off removes every /admin route (404).
    admin_enabled: bool = True
    # Console sessions end after this long without a request, and this long after login whatever
    # happens (OWASP Session Management Cheat Sheet: idle and absolute timeouts).
    admin_idle_minutes: int = 30
    admin_session_hours: int = 12
    # Who sends a transactional email (confirmation, emailed links) that `cadence web` queued:
    # "auto" (the default) is "web" with the single-machine brokers (filesystem://, memory://) and
    # "worker" with Redis or AMQP. See send_transactional_in_web.
    transactional_send: str = "auto"
    # Who runs a CSV import uploaded in the console (issue 14): "auto" is "web" (a thread of
    # `cadence web`) with the single-machine brokers and "worker" (a Celery task) with Redis or
    # AMQP, for the same reason as transactional_send. See run_imports_in_web.
    import_run: str = "auto"
    # The largest CSV the console accepts (CADENCE_IMPORT_MAX_MB): 1,000,000 rows are ~60 MB.
    import_max_bytes: int = 200 * 1024 * 1024
    # How long a console import's error report (people's rejected rows) is kept after the import
    # ends (CADENCE_IMPORT_REPORT_DAYS; storage limitation, GDPR Art. 5(1)(e)).
    import_report_days: int = 30
    # Staff API (web/staff_api.py): requests per token per minute (CADENCE_STAFF_API_PER_MINUTE).
    staff_api_per_minute: int = 120
    # Slow clients (slowloris): `cadence web` closes a connection whose request line and headers
    # take longer than header_timeout_seconds (CADENCE_HEADER_TIMEOUT_SECONDS), answers 408 to a
    # body with no byte for body_idle_seconds (CADENCE_BODY_IDLE_SECONDS) or not complete within
    # body_timeout_seconds (CADENCE_BODY_TIMEOUT_SECONDS; forms and JSON, at most 2 MiB) or
    # upload_timeout_seconds (CADENCE_UPLOAD_TIMEOUT_SECONDS; the console's CSV upload).
    # web/body_guard.py, web/serving.py; docs/deploy.md.
    header_timeout_seconds: float = 10.0
    body_idle_seconds: float = 15.0
    body_timeout_seconds: float = 60.0
    upload_timeout_seconds: float = 900.0
    extra: Mapping[str, str] = field(default_factory=dict)
    # CADENCE_SENDER_FILE: the sender's details (name, postal address, phone, booking page) and
    # newsletter topics, one file for emails and pages alike (issue 12). None: campaigns/sender.yaml.
    sender_file_override: Path | None = None
    # CADENCE_DEFAULT_FORM: the signup form `/subscribe` and the JSON API serve (a file stem of
    # campaigns/forms/); empty means the only form there, or `runners` when there are several.
    default_form: str = ""

    @property
    def sender_file(self) -> Path:
        return self.sender_file_override or self.campaigns_dir / "sender.yaml"

    @property
    def forms_dir(self) -> Path:
        """The signup forms, one YAML file each, beside the campaigns."""
        return self.campaigns_dir / "forms"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def clock(self) -> Clock:
        return clock_from_string(self.clock_spec)

    @property
    def metrics_root(self) -> Path:
        """Where worker, scheduler and web processes keep their per-run metrics folders."""
        return self.metrics_dir or self.data_dir / "metrics"

    @property
    def send_transactional_in_web(self) -> bool:
        """Whether `cadence web` sends the transactional emails it queues itself, right after the
        request's transaction commits, through the same send path as a worker (the ledger row
        is claimed, rendered, sent and recorded the same way). With the single-machine defaults
        a newcomer may run `cadence web` alone: no worker would ever read the filesystem queue,
        and nobody would get a confirmation email. With a shared broker a worker takes it (the
        web process then does no SMTP work). Either way a failed attempt is retried by the
        scheduler and the workers, like any delivery (CADENCE_TRANSACTIONAL_SEND)."""
        if self.transactional_send == "auto":
            return self.broker_url.startswith(("filesystem://", "memory://"))
        return self.transactional_send == "web"

    @property
    def run_imports_in_web(self) -> bool:
        """Whether `cadence web` runs the imports uploaded to the console itself, in a thread of
        its own, rather than queueing a Celery task. As with send_transactional_in_web: with the
        single-machine brokers a newcomer may run `cadence web` alone, and nothing would ever
        read the filesystem queue, so the upload would wait forever. With a shared broker a
        worker runs it (the web process only streams the file to disk)."""
        if self.import_run == "auto":
            return self.broker_url.startswith(("filesystem://", "memory://"))
        return self.import_run == "web"

    @property
    def imports_dir(self) -> Path:
        """The console's uploaded CSV files and their error reports, named by job id only."""
        return self.data_dir / "imports"

    @property
    def uses_redis_broker(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://"))


# CADENCE_DKIM_KEY_FILE keeps its meaning (an RSA key); Ed25519 (RFC 8463) has its own file and
# selector, because one selector's DNS record holds one key and most receivers still need RSA.
_DKIM_KEYS = (
    ("CADENCE_DKIM_KEY_FILE", "CADENCE_DKIM_SELECTOR", "rsa-sha256"),
    ("CADENCE_DKIM_ED25519_KEY_FILE", "CADENCE_DKIM_ED25519_SELECTOR", "ed25519-sha256"),
)


def _dkim(env: Mapping[str, str]) -> DkimSettings | None:
    keys: list[DkimKey] = []
    for file_var, selector_var, algorithm in _DKIM_KEYS:
        if not env.get(file_var):
            continue
        # Parsed here so a bad key fails at start; imported only then (dkimpy, OpenSSL: ~15 MB, issue 15).
        from cadence.core.dkim import key_algorithm

        key_file = Path(env[file_var])
        try:
            found = key_algorithm(key_file.read_bytes(), f"{file_var}: {key_file}")
        except OSError as exc:
            raise ConfigError(f"{file_var}: cannot read {key_file} ({exc.strerror or exc})") from exc
        if found != algorithm:
            kind = "an Ed25519" if found == "ed25519-sha256" else "an RSA"
            other = next(f for f, _, a in _DKIM_KEYS if a == found)
            raise ConfigError(f"{file_var}: {key_file} holds {kind} key; put it in {other}")
        if not env.get(selector_var):
            raise ConfigError(f"{selector_var}: required when {file_var} is set")
        keys.append(DkimKey(file_var, key_file, env[selector_var], algorithm))
    if not keys:
        return None
    if not env.get("CADENCE_DKIM_DOMAIN"):
        raise ConfigError(f"CADENCE_DKIM_DOMAIN: required when {keys[0].variable} is set")
    if len({k.selector for k in keys}) < len(keys):
        raise ConfigError(
            "CADENCE_DKIM_ED25519_SELECTOR: must differ from CADENCE_DKIM_SELECTOR (one key per DNS record)"
        )
    return DkimSettings(env["CADENCE_DKIM_DOMAIN"], tuple(keys))


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from exc
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {raw!r} is not a number") from exc
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    import ipaddress

    found = []
    for item in (part.strip() for part in env.get(name, "").split(",")):
        if not item:
            continue
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address or network (10.0.0.1, 10.0.0.0/8, ::1)") from None
    return tuple(found)


def _secret_key(env: Mapping[str, str], data_dir: Path, base_url: str) -> str:
    key = env.get("CADENCE_SECRET_KEY", "")
    if key:
        if len(key) < 16:
            raise ConfigError("CADENCE_SECRET_KEY: must be at least 16 characters")
        return key
    host = urlsplit(base_url).hostname or ""
    if host not in _LOCAL_HOSTS:
        raise ConfigError(
            f"CADENCE_SECRET_KEY: required when CADENCE_BASE_URL is not local ({base_url}); "
            "set it to a long random string shared by every worker and web process"
        )
    # Local use only: generate once and keep it, so links in sent emails stay valid.
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return path.read_text().strip()


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    port = _int(env, name, 0, minimum=1)
    if port > 65535:
        raise ConfigError(f"{name}: {port} is not a TCP port (1-65535)")
    return port


def _dns_resolver(env: Mapping[str, str]) -> tuple[str, int] | None:
    """CADENCE_DNS_RESOLVER=HOST[:PORT] (IPv6: [::1]:53): ask this server instead of the system's."""
    raw = env.get("CADENCE_DNS_RESOLVER", "").strip()
    if not raw:
        return None
    parts = urlsplit("//" + raw)
    try:
        port = parts.port or 53
    except ValueError:
        port = 0
    if not parts.hostname or not port:
        raise ConfigError(f"CADENCE_DNS_RESOLVER: {raw!r} is not HOST or HOST:PORT (e.g. 127.0.0.1:5353)")
    return parts.hostname, port


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
    return value


# prometheus-client's multiprocess mode reads this variable in every process that records
# metrics; a worker's prefork children and uvicorn's worker processes inherit it.
PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def process_metrics_dir() -> Path | None:
    """The multiprocess metrics folder this process writes to, if its parent set one up."""
    raw = os.environ.get(PROMETHEUS_DIR_VARIABLE)
    return Path(raw) if raw else None


def export_process_metrics_dir(path: Path) -> None:
    """Make `path` the multiprocess metrics folder of this process and of its children."""
    os.environ[PROMETHEUS_DIR_VARIABLE] = str(path)


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for the child processes it starts (``cadence
    demo`` passes it to its worker and scheduler with its own ``CADENCE_*`` values on top)."""
    return dict(os.environ)


def export_unbuffered_output() -> None:
    """Make the output of this process's Python children unbuffered (``PYTHONUNBUFFERED``) unless
    the caller chose otherwise: their log lines then reach a pipe or a journal as they are
    written."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `env` (default: os.environ). Raises ConfigError naming the variable."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("CADENCE_DATA_DIR") or ".cadence").absolute()
    database_url = env.get("CADENCE_DATABASE_URL") or f"sqlite:///{data_dir / 'cadence.db'}"
    if "://" not in database_url:
        raise ConfigError(f"CADENCE_DATABASE_URL: {database_url!r} is not a URL (sqlite:///... or postgresql://...)")
    if database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        # psycopg 3 is the driver we ship; SQLAlchemy defaults to psycopg2 for a bare scheme.
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    broker_url = env.get("CADENCE_BROKER_URL") or "filesystem://"
    if not broker_url.startswith(("filesystem://", "redis://", "rediss://", "amqp://", "memory://")):
        raise ConfigError(f"CADENCE_BROKER_URL: unsupported broker {broker_url!r} (filesystem://, redis://...)")
    email_url = env.get("CADENCE_EMAIL_URL") or "outbox://"
    if "://" not in email_url:
        raise ConfigError(f"CADENCE_EMAIL_URL: {email_url!r} is not a URL (outbox://, smtp://host:port, ...)")
    base_url = (env.get("CADENCE_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"CADENCE_BASE_URL: {base_url!r} must be an http(s) URL")
    clock_spec = env.get("CADENCE_CLOCK", "system")
    clock_from_string(clock_spec)  # a malformed CADENCE_CLOCK fails here, naming the variable
    redis_url = env.get("CADENCE_REDIS_URL") or (broker_url if broker_url.startswith("redis") else None)
    dkim = _dkim(env)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        email_url=email_url,
        base_url=base_url,
        base_url_is_default=not env.get("CADENCE_BASE_URL"),
        secret_key=_secret_key(env, data_dir, base_url),
        campaigns_dir=Path(env.get("CADENCE_CAMPAIGNS_DIR") or "campaigns").absolute(),
        templates_dir=Path(env.get("CADENCE_TEMPLATES_DIR") or "templates").absolute(),
        redis_url=redis_url,
        clock_spec=clock_spec,
        dkim=dkim,
        batch_size=_int(env, "CADENCE_BATCH_SIZE", 250),
        tick_seconds=_float(env, "CADENCE_TICK_SECONDS", 30.0),
        lease_seconds=_float(env, "CADENCE_LEASE_SECONDS", 600.0),
        max_attempts=_int(env, "CADENCE_MAX_ATTEMPTS", 8),
        soft_bounce_limit=_int(env, "CADENCE_SOFT_BOUNCE_LIMIT", 3),
        commit_every=_int(env, "CADENCE_COMMIT_EVERY", 20),
        trusted_proxies=_networks(env, "CADENCE_TRUSTED_PROXIES"),
        rate_limit_ipv6_prefix=_ipv6_prefix(env),
        previous_secret_keys=_list(env, "CADENCE_PREVIOUS_SECRET_KEYS"),
        metrics_dir=Path(env["CADENCE_METRICS_DIR"]).absolute() if env.get("CADENCE_METRICS_DIR") else None,
        metrics_port=_port(env, "CADENCE_METRICS_PORT"),
        metrics_host=env.get("CADENCE_METRICS_HOST") or "0.0.0.0",
        log_format=_choice(env, "CADENCE_LOG_FORMAT", "text", ("text", "json")),
        dns_resolver=_dns_resolver(env),
        bounce_imap_url=env.get("CADENCE_BOUNCE_IMAP_URL", ""),
        postmark_webhook_user=env.get("CADENCE_POSTMARK_WEBHOOK_USER", ""),
        postmark_webhook_password=env.get("CADENCE_POSTMARK_WEBHOOK_PASSWORD", ""),
        mailgun_webhook_signing_key=env.get("CADENCE_MAILGUN_WEBHOOK_SIGNING_KEY", ""),
        sender_file_override=Path(env["CADENCE_SENDER_FILE"]).absolute() if env.get("CADENCE_SENDER_FILE") else None,
        default_form=env.get("CADENCE_DEFAULT_FORM", "").strip(),
        admin_enabled=_bool(env, "CADENCE_ADMIN_ENABLED", True),
        admin_idle_minutes=_int(env, "CADENCE_ADMIN_IDLE_MINUTES", 30),
        admin_session_hours=_int(env, "CADENCE_ADMIN_SESSION_HOURS", 12),
        transactional_send=_choice(env, "CADENCE_TRANSACTIONAL_SEND", "auto", ("auto", "web", "worker")),
        staff_api_per_minute=_int(env, "CADENCE_STAFF_API_PER_MINUTE", 120),
        import_run=_choice(env, "CADENCE_IMPORT_RUN", "auto", ("auto", "web", "worker")),
        import_max_bytes=_int(env, "CADENCE_IMPORT_MAX_MB", 200, minimum=1) * 1024 * 1024,
        import_report_days=_int(env, "CADENCE_IMPORT_REPORT_DAYS", 30, minimum=1),
        header_timeout_seconds=_float(env, "CADENCE_HEADER_TIMEOUT_SECONDS", 10.0),
        body_idle_seconds=_float(env, "CADENCE_BODY_IDLE_SECONDS", 15.0),
        body_timeout_seconds=_float(env, "CADENCE_BODY_TIMEOUT_SECONDS", 60.0),
        upload_timeout_seconds=_float(env, "CADENCE_UPLOAD_TIMEOUT_SECONDS", 900.0),
    )


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def _ipv6_prefix(env: Mapping[str, str]) -> int:
    name = "CADENCE_RATE_LIMIT_IPV6_PREFIX"
    value = _int(env, name, 64, minimum=16)
    if value > 128:
        raise ConfigError(f"{name}: must be at most 128, got {value}")
    return value


@lru_cache(maxsize=1)
def os_user() -> str:
    """The login name of the person running the command, for the audit log (``cli:<user>``).
    getpass reads LOGNAME, USER... then the password database: the environment, so here."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no USER
        return "unknown"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return load_settings()
