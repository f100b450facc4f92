"""The one exception hierarchy of Cadence.

Every error Cadence raises on purpose derives from :class:`CadenceError`, so a caller
(the CLI, a Celery task, a web handler) can catch ours without catching bugs::

    CadenceError
    ├── ConfigError              a CADENCE_* variable is missing or malformed (names the variable)
    ├── CampaignError            a campaign file is invalid (names the file and the field)
    ├── TemplateError            a template fails to load, compile or render (names the file and line)
    ├── InputError               staff or subscriber input is invalid (a CSV row, an email address,
    │   │                        a header value with CR/LF); names the field or line
    │   ├── UsageError                   a command line that cannot work (CLI exit status 2)
    │   ├── AlreadyDone                  pause of a paused newsletter, resume of a running one
    │   │                                (the CLI says so and exits 0, like `campaigns pause`)
    │   ├── web.security.CsrfError       a form post without a valid CSRF token (403)
    │   └── web.ratelimit.RateLimited    too many requests from one IP (429)
    ├── NotFound                 a named campaign, subscriber or delivery does not exist
    ├── TokenError               a signed token is tampered with, expired, or for another purpose
    └── TransportError           sending failed
        ├── TransientSendError   worth retrying later (4xx, timeouts, 429, connection refused)
        └── PermanentSendError   never retry; the address is suppressed (5xx per recipient)
"""

from __future__ import annotations

__all__ = [
    "AlreadyDone",
    "CadenceError",
    "CampaignError",
    "ConfigError",
    "InputError",
    "NotFound",
    "PermanentSendError",
    "TemplateError",
    "TokenError",
    "TransientSendError",
    "TransportError",
    "UsageError",
]


class CadenceError(Exception):
    """Root of every error Cadence raises on purpose."""


class ConfigError(CadenceError):
    """A setting is missing or malformed. The message names the environment variable."""


class CampaignError(CadenceError):
    """A campaign definition is invalid. The message names the file and the field."""


class TemplateError(CadenceError):
    """A template cannot be loaded, compiled or rendered. The message names file and line."""

    def __init__(self, message: str, *, template: str | None = None, line: int | None = None) -> None:
        self.template = template
        self.line = line
        where = template or ""
        if template and line:
            where = f"{template}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class InputError(CadenceError):
    """Invalid input from staff or subscribers. The message names the field or the line."""


class UsageError(InputError):
    """The command line itself is wrong (options that exclude each other, one missing); the
    ``cadence`` command exits with status 2 for it, like a usage error found by the parser."""


class AlreadyDone(InputError):
    """What was asked is already the case (pausing a paused newsletter). The API answers it as
    any InputError; the ``cadence`` command prints it and exits 0, so a script that pauses twice
    does not fail, as with ``cadence campaigns pause``."""


class NotFound(CadenceError):
    """A named object does not exist."""


class TokenError(CadenceError):
    """A signed token is invalid, expired, or was made for another purpose."""


class TransportError(CadenceError):
    """Sending a message failed."""


class TransientSendError(TransportError):
    """A failure worth retrying later (SMTP 4xx, timeouts, HTTP 429/5xx)."""


class PermanentSendError(TransportError):
    """A failure that will not get better (SMTP 5xx for the recipient, HTTP 422)."""
