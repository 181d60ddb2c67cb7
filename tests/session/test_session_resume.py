"""Resume: `export` killed by SIGKILL at random moments, then run again, finishes the job as an
uninterrupted run does: every object exactly once, no partial or temporary file, the outcome
rows agreeing with the files, and nothing done before the kill written again."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sessionhelpers import GANTRY, tree, write_config

import gantry
from gateway.session.export import TEMPORARY

TRIALS = 12
GENERATED = 150


def _dump(root: Path, batch_folder: Any) -> Path:
    """Small CTs with UIDs of their own, an ultrasound to redact, and the malformed files."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for i in range(GENERATED):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.99.{i}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.98.{i % 3}"
        (root / f"s{i % 3}").mkdir(parents=True, exist_ok=True)
        ds.save_as(root / f"s{i % 3}" / f"{i:04d}.dcm", enforce_file_format=True)
    shutil.copy2(get_testdata_file("examples_rgb_color.dcm"), root / "us.dcm")
    shutil.copytree(batch_folder.root / "bad", root / "bad")
    return root


def _alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _done(db: Path, out: Path) -> dict[str, tuple[int, int]]:
    """The files the session records as done for `out`: path → (inode, mtime)."""
    with gantry.Session(db, progress=False) as session:
        rows = session.db.execute("SELECT path FROM exports WHERE out = ? AND path IS NOT NULL",
                                  [str(out)]).fetchall()
    found = {}
    for (path,) in rows:
        st = Path(path).stat()  # a recorded file exists
        found[path] = (st.st_ino, st.st_mtime_ns)
    return found


def _check_consistent(db: Path, out: Path) -> None:
    """Outcome rows ↔ files: each row's file exists, each file has exactly one row."""
    quarantine = out.parent / f"{out.name}-quarantine"
    with gantry.Session(db, progress=False) as session:
        rows = session.db.execute(
            "SELECT f.path, e.outcome, e.path FROM exports e JOIN files f ON f.id = e.file_id "
            "WHERE e.out = ?", [str(out)]).fetchall()
        files = session.db.execute("SELECT count(*) FROM files").fetchone()[0]
    assert len(rows) == files
    written = {p for _, outcome, p in rows if outcome == "exported"}
    copied = {p for _, outcome, p in rows if outcome == "quarantined"}
    assert written == {str(p) for p in out.rglob("*") if p.is_file()}
    assert copied | {p + ".reason.txt" for p in copied} == {
        str(p) for p in quarantine.rglob("*") if p.is_file()}


def test_export_killed_at_random_moments_then_resumed(batch_folder: Any, tmp_path: Path,
                                                      gantry_env: dict[str, str],
                                                      site_key_env: bytes) -> None:
    dump = _dump(tmp_path / "dump", batch_folder)
    config = write_config(tmp_path / "cfg")
    db = tmp_path / "s.gantry"
    with gantry.Session(db, workers=2, progress=False) as session:
        session.ingest(dump)
        session.load_config(config)

    def start(out: Path) -> subprocess.Popen:
        command = [str(GANTRY)] if GANTRY.exists() else [sys.executable, "-m", "gateway.cli"]
        return subprocess.Popen(command + ["export", str(db), str(out), "--workers", "2"],
                                env=gantry_env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    began = time.monotonic()  # how long a whole run takes here, to spread the kills over it
    ref = tmp_path / "ref" / "OUT"
    assert start(ref).wait(timeout=600) == 1  # something is quarantined
    span = time.monotonic() - began
    expected = tree(ref.parent)
    assert len(tree(ref)) == GENERATED + 1

    rng = random.Random(20261206)
    killed_mid_run = 0
    for trial in range(TRIALS):
        out = tmp_path / f"t{trial}" / "OUT"
        proc = start(out)
        time.sleep(rng.uniform(0.1, span))
        if trial % 2:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers, mid-write
        else:
            proc.send_signal(signal.SIGKILL)  # the command alone: its workers are orphaned
        killed_mid_run += proc.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 120
        while _alive(proc.pid):  # orphans finish the work they hold, then exit
            assert time.monotonic() < deadline, "workers outlived their export"
            time.sleep(0.05)
        before = _done(db, out) if out.exists() else {}
        with gantry.Session(db, workers=2, progress=False) as session:
            summary = session.export(out)
        assert summary.done == len({p for p in before if not p.endswith(".reason.txt")})
        assert [p for p in out.parent.rglob("*") if TEMPORARY.match(p.name)] == []
        assert tree(out.parent) == expected, f"trial {trial}: not as an uninterrupted run"
        _check_consistent(db, out)
        after = _done(db, out)
        for path, identity in before.items():  # done before the kill: not written again
            assert after[path] == identity, f"trial {trial}: {path} was rewritten"
    assert killed_mid_run >= TRIALS // 2, "most kills should land while the export runs"


@pytest.fixture
def killed_export_leaves(tmp_path: Path) -> Path:
    """A temporary file as a killed writer leaves it."""
    out = tmp_path / "OUT" / "study" / "series"
    out.mkdir(parents=True)
    (out / ".1.2.3.dcm.4242.tmp").write_bytes(b"half an object")
    return tmp_path / "OUT"


def test_a_killed_runs_temporary_files_are_removed(killed_export_leaves: Path,
                                                   batch_folder: Any, tmp_path: Path,
                                                   site_key_env: bytes) -> None:
    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        session.ingest(batch_folder.root / "study")
        session.export(killed_export_leaves)
    names = [p.name for p in killed_export_leaves.rglob("*") if p.is_file()]
    assert len(names) == 2 and not any(TEMPORARY.match(n) for n in names)
