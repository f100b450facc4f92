"""``CADENCE_LOG_FORMAT=json``: one JSON object per line, for log shippers (Loki, Elasticsearch,
CloudWatch, journald's JSON export).

Each line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, when the record
has them (``extra=``), ``delivery_id``, ``delivery_ids``, ``campaign_id`` and ``subscriber_id``:
ids only. Email addresses and the tokens and signatures of subscriber links are replaced before
a line is written, whatever logged them (an SMTP reply quoting the recipient, uvicorn's access
log of ``GET /u/<token>``): a log file must not be a list of subscribers, nor a set of working
unsubscribe and preference links (GDPR art. 5(1)(c), data minimisation).

Wired into ``cadence worker`` through Celery's logging signals (cadence.tasks) and into
``cadence web`` through uvicorn's log config (:func:`uvicorn_log_config`).
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

# Where a link's secret lives (web/pages.py, preferences.py, links.py): the rest of the path is kept.
_LINK_SECRETS = (
    (re.compile(r"(/(?:u|p|confirm|v|unsubscribe|preferences)/)[^\s/?#\"']+"), r"\1<token>"),
    # A console setup link sets a staff password for 72 hours (operations/staff_accounts.py).
    (re.compile(r"(/admin/setup/)[^\s/?#\"']+"), r"\1<token>"),
    (re.compile(r"(/c/\d+/\d+/)[^\s/?#\"']+"), r"\1<signature>"),
    (re.compile(r"(/o/\d+/)[^\s/?#\"']+"), r"\1<signature>"),
)
# Deliberately broad (RFC 5322 allows more, but this catches what mail servers echo back).
_EMAIL = re.compile(r"[^\s@<>()\[\]\"',;:]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CONTEXT_FIELDS = ("delivery_id", "delivery_ids", "campaign_id", "subscriber_id")


def redact(text: str) -> str:
    """`text` with email addresses and subscriber-link secrets replaced."""
    for pattern, replacement in _LINK_SECRETS:
        text = pattern.sub(replacement, text)
    return _EMAIL.sub("<email>", text)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON, redacted (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the line
            message = f"{record.msg} {record.args}"
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(message),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if record.processName and record.processName != "MainProcess":
            line["process"] = record.processName
        if record.exc_info:
            line["exception"] = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: str) -> None:
    """For ``json``: give the root logger a JSON handler on stderr unless it has one, and route
    ``warnings`` through logging. Celery keeps a root handler that exists when it sets up logging
    (``_is_configured``), and warnings it emits before then (running as root) are lines too."""
    if log_format != "json":
        return
    root = logging.getLogger()
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
    logging.captureWarnings(True)


def use_json(logger: logging.Logger) -> None:
    """Switch every handler of `logger` to :class:`JsonFormatter` (Celery set them up)."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)  # warnings.warn (Celery's SecurityWarning...) as JSON lines too


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``log_config`` for JSON lines: its own loggers and ours, one stderr handler."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
