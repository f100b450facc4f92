"""``cadence users``: who may log in to the staff console (/admin) and with which role.

``add`` and ``reset`` print a one-time setup link; the person opens it in a browser to choose
their password (nobody else ever knows it). Every change is written to the audit log as
``cli:<os user>``.
"""

from __future__ import annotations

import getpass
import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from cadence.errors import InputError

if TYPE_CHECKING:
    from cadence.config import Settings

users_app = typer.Typer(
    help="Staff console accounts: who may log in to /admin, and what they may do.", no_args_is_help=True
)
console = Console()

ROLE_HELP = "viewer (sees everything, changes nothing), editor (also campaigns and subscribers) or admin (also users)"


class Role(StrEnum):
    viewer = "viewer"
    editor = "editor"
    admin = "admin"


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name in the environment or the password database
        return "cli:unknown"


BASE_URL_HELP = "The console's address, for the link (default: CADENCE_BASE_URL)"
err_console = Console(stderr=True)


def _link_base(settings: Settings, base_url: str | None) -> tuple[str, bool]:
    """Where the setup link points, and whether that is a guess: without --base-url or
    CADENCE_BASE_URL, the default address of `cadence web` (cold trial: a console on another
    port, and a link to port 8000)."""
    if base_url:
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
            raise InputError(f"--base-url: {base_url!r} must be an http(s) URL (e.g. https://news.example.com)")
        return base_url.rstrip("/"), False
    return settings.base_url, settings.base_url_is_default


def _guessed(base: str) -> None:
    """Say on stderr (the link on stdout stays copyable, the JSON parseable) that the link's
    address is a guess, and how to give the real one."""
    err_console.print(
        f"note: the link assumes the console at the default address {base}. If `cadence web` runs "
        "elsewhere, set CADENCE_BASE_URL to its address (e.g. https://news.example.com) or pass "
        "--base-url, and make a new link with `cadence users reset EMAIL`.",
        markup=False,
        highlight=False,
    )


def _print_link(email: str, url: str, expires: str, as_json: bool, what: str) -> None:
    if as_json:
        typer.echo(json.dumps({"email": email, "setup_link": url, "expires_at": expires}))
        return
    console.print(
        f"[green]{what}[/green] {email}. Send them this link to choose a password (it works once, until {expires}):"
    )
    typer.echo(url)  # plain, unwrapped: a terminal must be able to copy it whole


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="Their email address: what they log in with")],
    role: Annotated[Role, typer.Option("--role", help=ROLE_HELP)] = Role.viewer,
    as_json: Annotated[bool, typer.Option("--json", help="Print the link as JSON")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
) -> None:
    """Give someone a console account and print the link where they choose their password."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import add_user

    settings = get_settings()
    base, guessed = _link_base(settings, base_url)
    with transaction(settings.database_url) as session:
        link = add_user(session, email, role.value, actor=_actor(), now=settings.clock().now())
    _print_link(
        link.email,
        link.url(base),
        link.expires_at.isoformat(timespec="minutes"),
        as_json,
        f"Added {role.value}",
    )
    if guessed:
        _guessed(base)


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON")] = False) -> None:
    """Everyone with a console account: role, whether they can log in, last login."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import list_users

    with transaction(get_settings().database_url) as session:
        users = list_users(session)
    if as_json:
        rows = [
            {
                "email": u.email,
                "role": u.role,
                "state": u.state,
                "totp": u.totp,
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in users
        ]
        typer.echo(json.dumps(rows))
        return
    if not users:
        console.print("No console users yet: add one with `cadence users add EMAIL --role admin`.")
        return
    table = Table("Email", "Role", "State", "Code app", "Last login")
    for u in users:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
        table.add_row(u.email, u.role, u.state, "on" if u.totp else "off", last)
    console.print(table)


@users_app.command("role")
def users_role(
    email: Annotated[str, typer.Argument(help="Their email address")],
    role: Annotated[Role, typer.Argument(help=ROLE_HELP)],
) -> None:
    """Change what someone may do (viewer, editor, admin), from their next click; they stay
    logged in."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import change_role

    settings = get_settings()
    with transaction(settings.database_url) as session:
        previous = change_role(session, email, role.value, actor=_actor(), now=settings.clock().now())
    if previous == role.value:
        console.print(f"{email.strip()} is already {role.value}: nothing changed.")
        return
    console.print(f"[green]{email.strip()}[/green] is now {role.value} (was {previous}).")


@users_app.command("disable")
def users_disable(email: Annotated[str, typer.Argument(help="Their email address")]) -> None:
    """Stop someone logging in; they are logged out everywhere at once. `reset` lets them back."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import disable_user

    settings = get_settings()
    with transaction(settings.database_url) as session:
        disable_user(session, email, actor=_actor(), now=settings.clock().now())
    console.print(f"[green]Disabled[/green] {email.strip()}: logged out everywhere.")


@users_app.command("reset")
def users_reset(
    email: Annotated[str, typer.Argument(help="Their email address")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the link as JSON")] = False,
    base_url: Annotated[str | None, typer.Option("--base-url", help=BASE_URL_HELP)] = None,
) -> None:
    """A new setup link for a forgotten password or a lost phone. Their old password and code app
    stop working and they are logged out everywhere."""
    from cadence.config import get_settings
    from cadence.db.session import transaction
    from cadence.operations.staff_accounts import reset_user

    settings = get_settings()
    base, guessed = _link_base(settings, base_url)
    with transaction(settings.database_url) as session:
        link = reset_user(session, email, actor=_actor(), now=settings.clock().now())
    _print_link(
        link.email,
        link.url(base),
        link.expires_at.isoformat(timespec="minutes"),
        as_json,
        "New setup link for",
    )
    if guessed:
        _guessed(base)
