"""Shared fixtures: a site key, and the corpus of real DICOM files the engine accepts.

`corpus_files()` is every file of pydicom's test files and of the pydicom-data package
(`get_testdata_files()` includes pydicom-data's files when it is installed) that
`gateway.dicomio.read_for_deid` accepts. A test that takes a `corpus_file` argument is
parametrized over it, one test per file (so pytest-xdist spreads the files over workers).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import data_store
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset

# A fixed test key (32 bytes): keyed outputs are reproducible from run to run.
SITE_KEY = bytes.fromhex("6a1f0c5e9b2d47a8c3e1f06b5d8a9c2e7f4b1a0d3c6e9f2b5a8d1c4e7f0a3b6d")
OTHER_KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0")

DATA_STORE = Path(data_store.__file__).parent / "data"
PYDICOM_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


@cache
def corpus_files() -> tuple[Path, ...]:
    """Every readable test file (pydicom's own + pydicom-data), sorted, cached."""
    from gateway.dicomio import DicomReadError, read_for_deid

    found: set[Path] = set()
    candidates = [Path(p) for p in pydicom.data.get_testdata_files()]
    candidates += [p for p in DATA_STORE.rglob("*") if p.is_file()]
    for path in candidates:
        if not path.is_file() or path.suffix in (".py", ".txt", ".json", ".md"):
            continue
        try:
            read_for_deid(path)
        except DicomReadError:
            continue
        found.add(path.resolve())
    assert found, "no readable DICOM test files: is pydicom-data installed?"
    return tuple(sorted(found))


def corpus_id(path: Path) -> str:
    """A short readable test id for a corpus file."""
    for base in (DATA_STORE, PYDICOM_TEST_FILES):
        try:
            return str(path.relative_to(base.resolve()))
        except ValueError:
            continue
    return path.name


@cache
def corpus_studies() -> tuple[tuple[Path, ...], ...]:
    """The corpus files grouped by original Study Instance UID (groups of two or more)."""
    by_study: dict[str, list[Path]] = {}
    for path in corpus_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if "StudyInstanceUID" in ds:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(path)
    return tuple(tuple(files) for files in by_study.values() if len(files) > 1)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`corpus_file` → one test per corpus file; a test module's `CORPUS_XFAIL` (corpus id →
    reason) marks the files that reveal a known engine bug as strict xfails.
    `corpus_study` → one test per group of corpus files sharing a study."""
    if "corpus_study" in metafunc.fixturenames:
        groups = corpus_studies()
        metafunc.parametrize("corpus_study", groups,
                             ids=[f"{corpus_id(g[0])}+{len(g) - 1}" for g in groups])
    if "corpus_file" in metafunc.fixturenames:
        xfail: dict[str, str] = getattr(metafunc.module, "CORPUS_XFAIL", {})
        params = []
        for path in corpus_files():
            name = corpus_id(path)
            marks = [pytest.mark.xfail(strict=True, reason=xfail[name])] if name in xfail else []
            params.append(pytest.param(path, id=name, marks=marks))
        metafunc.parametrize("corpus_file", params)


@pytest.fixture(scope="session")
def site_key() -> bytes:
    """The site HMAC key used by engine tests."""
    return SITE_KEY


@pytest.fixture(scope="session")
def other_key() -> bytes:
    """A second, different site key."""
    return OTHER_KEY


@pytest.fixture
def site_key_env(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """GANTRY_SITE_KEY set (hex) for commands that load the key from the embedded config."""
    monkeypatch.setenv("GANTRY_SITE_KEY", SITE_KEY.hex())
    return SITE_KEY


@pytest.fixture(scope="session")
def corpus() -> tuple[Path, ...]:
    """The corpus as a fixture, for tests that need several files at once."""
    return corpus_files()


@pytest.fixture(scope="session")
def gantry_env() -> dict[str, str]:
    """Environment for running the `gantry` command in a subprocess."""
    env = dict(os.environ)
    env["GANTRY_SITE_KEY"] = SITE_KEY.hex()
    env["TCP_NODELAY"] = "1"
    return env


# ------------------------------------------------------------------ a folder for batch runs

# Identifiers planted into the batch folder's files: they must never reach an output, a reason
# file, or anything a command prints.
BATCH_PLANTED = ("Quixote^Zebedaeus", "Quixote", "Zebedaeus", "PID-QZ-40417", "ACCQZ58134",
                 "PRIVQZ-77191-SECRET")


@dataclass
class BatchFolder:
    """An input tree of good and malformed files, and what a batch run must make of it."""

    root: Path
    planted: tuple[str, ...] = BATCH_PLANTED
    good: list[Path] = field(default_factory=list)
    # malformed file → words its quarantine reason must contain (case-insensitive)
    bad: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    same_study: tuple[Path, Path] | None = None


def _planted(src: str) -> Dataset:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file(src))
    ds.PatientName = BATCH_PLANTED[0]
    ds.PatientID = BATCH_PLANTED[3]
    ds.AccessionNumber = BATCH_PLANTED[4]
    ds.private_block(0x0029, "GANTRY PLANTED QZ", create=True).add_new(
        0x01, "LO", BATCH_PLANTED[5])
    return ds


def build_batch_folder(root: Path) -> BatchFolder:
    """Good files (planted CT, MR, two CTs of one study in a sub-folder) and malformed ones:
    truncated in a value, truncated in the pixel data, a bad VR, not DICOM, no file meta,
    no SOP Class UID, an empty file, a DICOMDIR."""
    folder = BatchFolder(root)
    (root / "study").mkdir(parents=True)
    (root / "bad").mkdir()
    for src, dst in (("CT_small.dcm", "ct.dcm"), ("MR_small.dcm", "mr.dcm"),
                     ("dicomdirtests/77654033/CT2/17136", "study/17136.dcm"),
                     ("dicomdirtests/77654033/CT2/17166", "study/17166.dcm")):
        _planted(src).save_as(root / dst)
        folder.good.append(root / dst)
    folder.same_study = (root / "study/17136.dcm", root / "study/17166.dcm")

    data = (root / "ct.dcm").read_bytes()
    at = data.index(BATCH_PLANTED[0].encode())  # explicit VR LE: tag, VR, length, value
    assert data[at - 8:at - 4] == b"\x10\x00\x10\x00"
    bad = root / "bad"
    (bad / "truncated_value.dcm").write_bytes(data[:at + 5])
    folder.bad[bad / "truncated_value.dcm"] = ("truncated", "(0010,0010)")
    (bad / "truncated_pixels.dcm").write_bytes(data[:-1000])
    folder.bad[bad / "truncated_pixels.dcm"] = ("truncated", "(7FE0,0010)")
    (bad / "bad_vr.dcm").write_bytes(data[:at - 4] + b"ZZ" + data[at - 2:])
    folder.bad[bad / "bad_vr.dcm"] = ("(0010,0010)",)
    (bad / "notes.txt").write_text(f"Patient {BATCH_PLANTED[0]}, not an image\n")
    folder.bad[bad / "notes.txt"] = ("not a dicom",)
    ds = _planted("MR_small.dcm")
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(bad / "no_meta.dcm", ds, enforce_file_format=False, implicit_vr=True,
                     little_endian=True)
    folder.bad[bad / "no_meta.dcm"] = ("meta",)
    ds = _planted("CT_small.dcm")
    del ds.SOPClassUID  # Type 1 everywhere; the file meta still names the class
    ds.save_as(bad / "no_sop_class.dcm", enforce_file_format=True)
    folder.bad[bad / "no_sop_class.dcm"] = ("missing", "(0008,0016)")
    (bad / "empty.dcm").write_bytes(b"")
    folder.bad[bad / "empty.dcm"] = ("dicom",)
    # A medium's index, as on every CD: it names the patients, and there is no object in it.
    shutil.copyfile(pydicom.data.get_testdata_file("DICOMDIR"), bad / "DICOMDIR")
    folder.bad[bad / "DICOMDIR"] = ("not an object", "dicomdir")
    return folder


@pytest.fixture(scope="module")
def batch_folder(tmp_path_factory: pytest.TempPathFactory) -> BatchFolder:
    """A fresh input tree for batch tests (one per test module)."""
    return build_batch_folder(tmp_path_factory.mktemp("batch") / "input")
