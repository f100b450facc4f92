"""Every ``cadence`` command README.md shows exists as written: each command path answers
``--help`` (exit 0) through the installed command, and each ``--option`` written beside it is
one its ``--help`` lists. The README is what a marketer types from (issue 13's trial), so a
renamed command or option must fail here, not in their terminal."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from tests.test_cli import CADENCE

README = Path(__file__).resolve().parents[1] / "README.md"
GROUPS = ("campaigns", "newsletters", "subscribers", "users", "tokens", "db", "bounces")
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}


@cache
def _run_help(path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CADENCE, *path, "--help"], capture_output=True, text=True, env=ENV, timeout=120)


def _help(path: tuple[str, ...]) -> str:
    done = _run_help(path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (path, done.stderr)
    return done.stdout


def _prefetch(mentions: list[list[str]]) -> None:
    """Run the ``--help`` of every path the README could name, four at a time, level by level
    (a word is looked up below a path only if that path has commands): one by one, the ~60
    interpreter starts took 45 s of the suite. The check below decides what exists."""
    level: set[tuple[str, ...]] = {()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        while level:
            done = dict(zip(sorted(level), pool.map(_run_help, sorted(level)), strict=True))
            groups = {path for path, ran in done.items() if ran.returncode == 0 and "Commands" in ran.stdout}
            level = {
                tuple(tokens[: len(path) + 1])
                for tokens in mentions
                for path in groups
                if len(tokens) > len(path)
                and tuple(tokens[: len(path)]) == path
                and re.fullmatch(r"[a-z][a-z-]*", tokens[len(path)])
            }


def _subcommands(path: tuple[str, ...]) -> set[str]:
    text = _help(path)
    return set(re.findall(r"^│ ([a-z][a-z-]*)\s", text.split("Commands", 1)[1], re.M)) if "Commands" in text else set()


def _mentions(readme: str) -> list[list[str]]:
    """Each `cadence ...` on a line (up to a backtick, a comment or a parenthesis), and each
    inline code span that starts with a command group (`campaigns list --json`), as tokens;
    `a|b|c` stands for each of a, b and c."""
    found = []
    for line in readme.splitlines():
        line = line.split("  #")[0]
        texts = [m.group(1) for m in re.finditer(r"(?:^|[\s(`])cadence((?: [^\s;&)`]+)*)", line)]
        texts += [span for span in re.findall(r"`([^`]+)`", line) if span.split("|")[0].split(" ")[0] in GROUPS]
        for text in texts:
            variants: list[list[str]] = [[]]
            for token in text.split():
                choices = token.split("|") if re.fullmatch(r"[a-z-]+(\|[a-z-]+)+", token) else [token]
                variants = [[*v, c] for v in variants for c in choices]
            found += variants
    return found


def test_every_command_and_option_in_the_readme_exists() -> None:
    mentions = _mentions(README.read_text(encoding="utf-8"))
    assert len(mentions) > 80  # the extraction still finds the README's commands
    _prefetch(mentions)
    problems = []
    for tokens in mentions:
        path: tuple[str, ...] = ()
        for token in tokens:
            if token.startswith("-") or token not in _subcommands(path):
                break
            path += (token,)
        rest = tokens[len(path) :]
        shown = "cadence " + " ".join(tokens)
        if rest and not rest[0].startswith("-") and (not path or path[-1] in GROUPS) and not rest[0].isupper():
            problems.append(f"{shown}: no command {rest[0]!r} in `cadence {' '.join(path)}`")
            continue
        listed = set(re.findall(r"--[a-z][a-z0-9-]*", _help(path)))
        problems += [
            f"{shown}: `cadence {' '.join(path)}` has no option {option}"
            for option in (t.split("=")[0].rstrip(",.:") for t in rest if t.startswith("--"))
            if option not in listed
        ]
    assert problems == [], "\n".join(problems)
