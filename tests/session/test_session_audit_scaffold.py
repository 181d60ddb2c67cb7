"""`session.scaffold_config` (also `setup_config`) and `session.audit()`, and the same on the
command line: `gantry scaffold DB -o FILE`, `gantry audit DB`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sessionhelpers import assert_nothing_planted, gantry

import gantry as api


def test_scaffold_and_audit_of_a_session(batch_folder: Any, tmp_path: Path,
                                         site_key_env: bytes) -> None:
    with api.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        session.ingest(batch_folder.root)
        written = session.setup_config(tmp_path / "gantry.yaml")
        with pytest.raises(FileExistsError, match="gantry.yaml: exists"):
            session.scaffold_config(written)
        text = written.read_text()
        assert "redaction:" in text and "profile:" in text
        assert_nothing_planted(batch_folder.planted, text)
        assert api.load_config(written) == session.load_config(written)  # accepted unchanged
        report = session.audit()
    assert isinstance(report, api.RiskReport) and report.level == "session"
    assert report.instances == len(batch_folder.good) + len(batch_folder.bad)
    assert 0 < report.unreadable <= len(batch_folder.bad)  # (a header before bad pixels reads)
    assert report.score and report.score > 0  # planted names, IDs, private elements
    assert_nothing_planted(batch_folder.planted, repr(report))


def test_scaffold_and_audit_of_a_session_on_the_command_line(
        batch_folder: Any, tmp_path: Path, gantry_env: dict[str, str]) -> None:
    db = tmp_path / "s.gantry"
    assert gantry("ingest", db, batch_folder.root, "--quiet", env=gantry_env).returncode == 0
    scaffold = gantry("scaffold", db, "-o", tmp_path / "c.yaml", env=gantry_env)
    assert scaffold.returncode == 0, scaffold.stderr
    assert api.load_config(tmp_path / "c.yaml")
    audit = gantry("audit", db, "--config", tmp_path / "c.yaml", env=gantry_env)
    assert audit.returncode == 1, audit.stderr  # the malformed files are unreadable
    for run in (scaffold, audit):
        assert_nothing_planted(batch_folder.planted, run.stdout + run.stderr)
