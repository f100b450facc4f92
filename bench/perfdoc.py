"""Every benchmark writes its results into one file, ``docs/performance.md``, as a section
between ``<!-- name:begin -->`` and ``<!-- name:end -->`` markers; the rest of the file is kept,
so each script can be re-run on its own."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"

HEAD = """# Performance

Measured by the scripts in `bench/`, each of which rewrites its own section below. Numbers come
from a shared 2-CPU machine: compare ratios measured side by side in one run, not absolute
numbers across runs.

| script | what it measures |
| --- | --- |
| `bench/send_throughput.py` | end-to-end emails/s through workers, Redis, PostgreSQL, SMTP vs plain smtplib |
| `bench/tick_cost.py` | the tick with 1,000,000 vs 100,000 enrollments, 10,000 due |
| `bench/render.py` | per-email rendering: compiled variants vs MJML per subscriber |
| `bench/message.py` | MIME building and DKIM signing vs the standard library and dkimpy; SMTP connection reuse |
| `bench/vs_listmonk.py` | Cadence vs listmonk v6.2.0 and postfix's C client: emails/s, peak RSS/PSS, CPU per email |
| `bench/scale.py` | a million subscribers end to end: import, enroll, tick, send |
| `bench/multihost.py` | workers on three hosts (network namespaces), one killed with SIGKILL mid-send |
"""


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section `name` of docs/performance.md with `body`."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEAD
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
    return DOC
