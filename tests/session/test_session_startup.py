"""A re-ingest of an unchanged tree is one walk and one SELECT: no engine import, no worker, no
write; and `gantry COMMAND` imports only the module of that command."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

import gantry
from gateway.batch import iter_inputs
from gateway.cli import COMMANDS, build_parser
from gateway.session.ingest import walk

# What a re-ingest that reads no file must not load (the engine, the network, the workers).
HEAVY = ("pydicom", "numpy", "pynetdicom", "structlog", "yaml", "cryptography", "rich",
         "gateway.pipeline", "gateway.config", "gateway.fanout", "gateway.session.parallel",
         "gateway.session.headers",
         # and what start-up alone would cost a tenth of the command: argparse's formatter asks
         # shutil for the terminal's width; pathlib pulls in urllib and ipaddress
         "shutil", "pathlib")


def test_walk_lists_what_deidentify_reads_in_its_order(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("b.dcm", "a.dcm", "sub/z.dcm", "sub/deeper/y.dcm", "Sub2/x.dcm", ".hidden.dcm",
                ".hidden/w.dcm", "sub/.v.dcm"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode() * 3)
    (root / "linked-folder").symlink_to(root / "sub")  # not entered, as os.walk does not
    (root / "linked-file.dcm").symlink_to(root / "a.dcm")  # read through the link
    found = walk(root)
    assert [p for p, _, _ in found] == [str(p) for p in iter_inputs(root)]
    assert len(found) == 6
    for path, size, mtime in found:
        st = os.stat(path)
        assert (size, mtime) == (st.st_size, st.st_mtime_ns)
    assert walk(root / "a.dcm") == [(str(root / "a.dcm"), 15, (root / "a.dcm").stat().st_mtime_ns)]


def _with_duplicates(batch_folder: Any, root: Path) -> Path:
    """Two files of one study, an identical copy of one, another content under the other's
    SOP Instance UID."""
    shutil.copytree(batch_folder.root / "study", root)
    shutil.copy2(root / "17136.dcm", root / "17136-copy.dcm")
    ds = pydicom.dcmread(root / "17166.dcm")
    ds.SeriesDescription = "another content, the same SOP Instance UID"
    ds.save_as(root / "17166-other.dcm")
    return root


def test_unchanged_reingest_writes_nothing_and_keeps_the_duplicate_counts(
        batch_folder: Any, tmp_path: Path) -> None:
    root = _with_duplicates(batch_folder, tmp_path / "in")
    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        first = session.ingest(root)
        changes = session.db.total_changes
        again = session.ingest(root)
        assert session.db.total_changes == changes  # not one row written
        assert (again.new, again.unchanged, again.changed, again.missing) == (0, 4, 0, 0)
        assert (again.duplicates, again.conflicts) == (first.duplicates, first.conflicts) == (1, 1)
        (root / "17136-copy.dcm").unlink()  # a change: duplicates are settled again
        gone = session.ingest(root)
        assert (gone.missing, gone.duplicates, gone.conflicts) == (1, 0, 1)


def test_duplicates_left_unsettled_by_a_killed_run_are_settled_by_the_next(
        batch_folder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.session import ingest as ingest_module

    root = _with_duplicates(batch_folder, tmp_path / "in")

    def killed(db: Any) -> None:  # the process dies once every row is committed
        raise SystemExit(128 + 9)

    monkeypatch.setattr(ingest_module, "resolve_duplicates", killed)
    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session, \
            pytest.raises(SystemExit):
        session.ingest(root)
    monkeypatch.undo()
    with gantry.Session(tmp_path / "s.gantry", workers=1, progress=False) as session:
        again = session.ingest(root)  # nothing new to read, but duplicates to settle
        assert (again.new, again.unchanged) == (0, 4)
        assert (again.duplicates, again.conflicts) == (1, 1)
        assert len(session.instances) == 3
        settled = session.ingest(root)
        assert (settled.duplicates, settled.conflicts) == (1, 1)


def test_unchanged_reingest_on_the_command_line_loads_no_engine(batch_folder: Any,
                                                                tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(batch_folder.root, root)
    db = tmp_path / "s.gantry"
    total = len(batch_folder.good) + len(batch_folder.bad)
    script = ("import sys\nfrom gateway.cli import main\n"
              f"code = main(['ingest', {str(db)!r}, {str(root)!r}, '--quiet'])\n"
              f"print(code, sorted(m for m in sys.modules if m.startswith({HEAVY!r})))\n")
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300)
    assert f"{total} new, 0 unchanged" in first.stdout, first.stderr
    assert "pydicom" in first.stdout.splitlines()[-1]  # the check below can see an import
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=300)
    assert f"0 new, {total} unchanged, 0 changed" in again.stdout, again.stderr
    assert again.stdout.splitlines()[-1] == "0 []"


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


def test_each_command_is_registered_by_the_module_the_table_names() -> None:
    everything = _commands(build_parser())
    assert everything == set(COMMANDS)
    for name in COMMANDS:
        alone = _commands(build_parser(name))
        assert name in alone and len(alone) < len(everything)
    # the session's commands build the parser of the one given, not their module's seven
    assert _commands(build_parser("ingest")) == {"ingest"}


@pytest.mark.parametrize("columns", ["60", "140"])
def test_help_fits_the_width_shutil_would_report(columns: str) -> None:
    env = {**os.environ, "COLUMNS": columns}
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "ingest", "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(map(len, lines)) <= int(columns) - 2
    # the db argument's help is on one line at 140 columns and wrapped at 60
    whole = any("session database (created 0600 if new)" in line for line in lines)
    assert whole == (columns == "140")
