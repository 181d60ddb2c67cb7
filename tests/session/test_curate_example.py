"""scripts/curate_example.py, the README's walk through the checkpoints, runs as documented:
twice (the second run finds everything done), and it says nothing identifying."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sessionhelpers import assert_nothing_planted

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "curate_example.py"


def test_the_example_script_walks_the_checkpoints(batch_folder: Any, tmp_path: Path,
                                                  gantry_env: dict[str, str]) -> None:
    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), str(batch_folder.root),
                               str(tmp_path / "work")], capture_output=True, text=True,
                              env=gantry_env, timeout=600)

    first, second = run(), run()
    for result in (first, second):
        assert result.returncode == 1, result.stderr  # the malformed files are refused
        assert_nothing_planted(batch_folder.planted, result.stdout + result.stderr)
        for step in ("1. ingest", "2. examine", "5. anonymize", "6. redact", "7. verify",
                     "8. export"):
            assert step in result.stdout
    good, bad = len(batch_folder.good), len(batch_folder.bad)
    assert f"this run: {good} exported, {bad} quarantined" in first.stdout
    assert f"this run: 0 exported, 0 quarantined, {good + bad} already done" in second.stdout
    assert len(list((tmp_path / "work" / "OUT").rglob("*.dcm"))) == good
