"""Helpers for the session tests: a dump made of the corpus (pydicom's test files and
pydicom-data) plus the planted batch folder, a configuration that redacts one machine, and the
`gantry` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import data_store
import pydicom.data

GANTRY = Path(sys.executable).parent / "gantry"
_BASES = (Path(data_store.__file__).parent / "data", Path(pydicom.data.__file__).parent
          / "test_files")

# A machine of the corpus at risk of burned-in text (ultrasound) gets a redaction rule, so that
# the dump has redacted objects, refused ones, and objects that need no rule.
CONFIG = """\
site_key: {env: GANTRY_SITE_KEY}
profile:
  options:
    - Retain Longitudinal Temporal Information with Modified Dates Option
    - Retain Patient Characteristics Option
  date_shift_days: [-365, -1]
redaction:
  rules:
    - name: logiq-700
      match: {Manufacturer: G.E. Medical Systems, ManufacturerModelName: LOGIQ 700}
      regions: [[0, 0, 64, 24]]
"""


def copy_corpus(files: Iterable[Path], root: Path) -> Path:
    """Copy corpus files under `root`, named as they are in their package."""
    for path in files:
        rel = Path(path.name)
        for base in _BASES:
            if path.is_relative_to(base.resolve()):
                rel = Path(base.parent.name) / path.relative_to(base.resolve())
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return root


def write_config(folder: Path, text: str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gantry.yaml"
    path.write_text(text)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path (empty when it does not exist)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def gantry(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(GANTRY)] if GANTRY.exists() else [sys.executable, "-m", "gateway.cli"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=900)


def assert_nothing_planted(planted: Iterable[str], text: str) -> None:
    for value in planted:
        assert value not in text, "a planted identifier was printed or written"
