"""Headless Chromium (Debian `chromium`) for the report tests: a screenshot with the console's
messages, and the layout of a page in a window of a given width."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Appended to a copy of the page (the report itself has no script): writes the layout into it.
PROBE = """<script>
const tables = [...document.querySelectorAll("table")].map(
  t => Math.ceil(t.getBoundingClientRect().right));
const out = document.createElement("pre"); out.id = "layout";
out.textContent = JSON.stringify({viewport: document.documentElement.clientWidth,
  scroll: document.documentElement.scrollWidth, tables: tables});
document.body.appendChild(out);
</script>"""


def chromium(page: Path, shot: Path, profile: Path, size: str = "1200,1600") -> list[str]:
    """Load `page` in headless Chromium, screenshot it; return its console messages."""
    run = subprocess.run(
        [shutil.which("chromium") or "chromium", *CHROMIUM, f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", f"--window-size={size}",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line]


def layout(page: Path, profile: Path, width: int = 1280) -> dict:
    """The page's layout in a window `width` px wide: the viewport's width, the document's
    scroll width and the right edge of each table (CSS pixels)."""
    probe = page.with_name(f"probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    run = subprocess.run(
        [shutil.which("chromium") or "chromium", *CHROMIUM, f"--user-data-dir={profile}",
         f"--window-size={width},900", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="layout">(.*?)</pre>', run.stdout)
    assert found, run.stdout[-2000:]
    return json.loads(found[1])


def assert_fits(page: Path, profile: Path) -> None:
    """Every table of `page` fits a 1280 px window: nothing to scroll sideways."""
    box = layout(page, profile)
    assert 1200 <= box["viewport"] <= 1280, box
    assert box["tables"] and max(box["tables"]) <= box["viewport"], box
    assert box["scroll"] <= box["viewport"], box
