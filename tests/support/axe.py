"""axe-core (the npm package) for accessibility checks in Playwright.

The test setup installs it with the machine's npm into a cache folder the first time
(``$CADENCE_AXE_DIR``, default ``~/.cache/cadence-tests/axe``); without npm or the registry a
test that needs it skips, and fails under CI (tests/support/services.unavailable).

Pages are scanned in a browser context made with ``bypass_csp=True``: our CSP forbids the inline
script ``page.add_script_tag`` inserts. The CSP itself is checked in the test's own context.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.services import unavailable

AXE_VERSION = "4"  # axe-core 4.x: the rule set the suite's expectations are written for
BLOCKING = ("serious", "critical")


def axe_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cadence-tests" / "axe"
    return Path(os.environ.get("CADENCE_AXE_DIR") or default)


def axe_script() -> Path:
    """The path of axe.min.js, installing axe-core with npm if it is not there yet."""
    folder = axe_dir()
    script = folder / "node_modules" / "axe-core" / "axe.min.js"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm (to install axe-core)", "apt-get install npm")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            str(npm),
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "--prefix",
            str(folder),
            f"axe-core@{AXE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0 or not script.exists():
        unavailable("the npm registry (to install axe-core)", done.stderr.strip()[-300:] or "npm install failed")
    return script


def serious_violations(page: Any, script: Path, *, frames: bool = True) -> list[str]:
    """Run axe on the page as it is; the serious and critical violations, one line each.
    `frames=False`: not inside the page's frames (sandboxed frames without scripts cannot run
    axe, which then waits for each of them; the frame elements themselves are still checked)."""
    page.add_script_tag(path=str(script))
    options = "{resultTypes: ['violations']" + ("" if frames else ", iframes: false") + "}"
    results = page.evaluate(f"async () => await axe.run(document, {options})")
    found = []
    for violation in results["violations"]:
        if violation.get("impact") in BLOCKING:
            targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
            found.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return found
