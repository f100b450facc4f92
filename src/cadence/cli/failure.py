"""How the ``cadence`` command ends: exit status 0, 1 (an error) or 2 (a usage error), and one
line on stderr saying what went wrong, never a traceback (unless ``cadence --debug``).

Generic on purpose: every command, whichever module registers it, runs inside :func:`run`, so
it gets the same exit statuses and messages without doing anything. A script or a cron job can
rely on them:

====  =====================================================================================
0     done
1     an error: invalid input or data, a missing file or campaign, a setting, the database
2     a usage error: unknown command or option, a missing argument, options that exclude
      each other
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from cadence.errors import CadenceError, UsageError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_debug = False


def set_debug(enabled: bool) -> None:
    """``cadence --debug``: let unexpected errors out with their traceback."""
    global _debug
    _debug = enabled


def _click_exception_types() -> tuple[type[Exception], ...]:
    # Typer 0.16+ ships its own copy of click (typer._click), whose exceptions are not
    # click.ClickException; older typers raise click's own. Catch whichever are installed.
    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except ImportError:
            continue
    return tuple(found)


def run(app: Any, args: list[str] | None = None) -> NoReturn:
    """Run the Typer `app` and exit with the status described in the module docstring."""
    click_errors = _click_exception_types()
    try:
        status = app(args=args, standalone_mode=False)
    except KeyboardInterrupt:
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click_errors as exc:
        sys.exit(_click_error(exc))
    except BrokenPipeError:  # `cadence ... | head`: the reader left; nothing to say to anyone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if isinstance(exc, typer.Abort):  # Ctrl-C or end of input at a prompt
            _say("aborted")
            sys.exit(EXIT_INTERRUPTED)
        if _debug and not isinstance(exc, CadenceError):
            raise
        _say(describe(exc))
        sys.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_ERROR)
    # standalone_mode=False returns the status of typer.Exit(n) instead of exiting with it.
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)


def describe(exc: BaseException) -> str:
    """One line for an error: ours as they are; the database's and the file system's in the
    words a user can act on; anything else (a bug) by its type, with a pointer to --debug."""
    if isinstance(exc, CadenceError):
        return str(exc)
    from cadence.db.session import database_problem  # imports SQLAlchemy: only when failing

    database = database_problem(exc)
    if database is not None:
        return database
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"unexpected {type(exc).__name__}: {first_line} (run `cadence --debug ...` for the traceback)"


def _click_error(exc: Exception) -> int:
    """A parser error as one line (the help text itself for a bare group: `cadence subscribers`)."""
    status = int(getattr(exc, "exit_code", EXIT_USAGE))
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        return status
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and status == EXIT_USAGE else ""
    _say(f"{message.rstrip('.') if hint else message}{hint}")
    return status


def _say(message: str) -> None:
    # soft_wrap: one line however long (Rich would wrap at 80 columns when not on a terminal);
    # Text, not markup: a message may hold [brackets].
    line = Text.assemble(("error:", "red"), " ", message)
    Console(stderr=True, highlight=False).print(line, soft_wrap=True)
