"""Parsing shared by several commands' options."""

from __future__ import annotations

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
