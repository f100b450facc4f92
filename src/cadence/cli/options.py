"""Parsing shared by several commands' options, and help text as a person reads it."""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

from cadence.errors import InputError


def parse_attrs(pairs: list[str]) -> dict[str, str]:
    """``--attr key=value`` options as a mapping; InputError names the bad one."""
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--attr: {pair!r} is not key=value")
        attributes[key.strip()] = value.strip()
    return attributes


# ---------------------------------------------------------------------------- help as a person reads it


def reflow(text: str) -> str:
    """A docstring as help text: the line breaks inside a paragraph become spaces (Rich then
    wraps to the terminal), blank lines still separate paragraphs. Typer keeps a docstring's
    source line breaks, so the command list showed "Run exactly one; a" on a line of its own."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs)


class _PlainParams:
    """Options as a marketer reads them: a flag shows no ``<bool>`` type (it takes no value),
    other options an upper-case word (``--segment TEXT``) rather than a Python type (``<str>``,
    ``<list[str]>``), and an argument only its name and help."""

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "_cadence_plain", False):
                continue
            if type(param).__name__ == "TyperArgument":
                param.display_type_rich = _no_type  # its name says what it is
            elif getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _word(param)
            param._cadence_plain = True
        return params


def _no_type(ctx: Any) -> None:
    return None


def _word(param: Any) -> str:
    try:
        bare = str(param.bare_type())
    except Exception:  # a type Typer cannot name: say nothing rather than fail the help
        return "TEXT"
    words = {"int": "NUMBER", "float": "NUMBER", "Path": "PATH", "datetime": "TIME"}
    return words.get(bare.removeprefix("list[").removesuffix("]"), "TEXT")


class PlainCommand(_PlainParams, TyperCommand):
    pass


class PlainGroup(_PlainParams, TyperGroup):
    pass


def tidy_help(app: typer.Typer) -> None:
    """Give every command of `app` (and of its sub-groups, whichever module registered them)
    reflowed help and plain option types; call once, after every command is registered."""
    if app.info.cls is None or app.info.cls is TyperGroup or isinstance(app.info.cls, DefaultPlaceholder):
        app.info.cls = PlainGroup
    for info in app.registered_commands:
        if info.cls is None or info.cls is TyperCommand:
            info.cls = PlainCommand
        text = info.help if info.help is not None else inspect.getdoc(info.callback)
        if text:
            info.help = reflow(text)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            if isinstance(group.help, str):
                group.help = reflow(group.help)
            tidy_help(group.typer_instance)
