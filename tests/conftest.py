"""Shared fixtures: a site key, and the corpus of real DICOM files the engine accepts.

`corpus_files()` is every file of pydicom's test files and of the pydicom-data package
(`get_testdata_files()` includes pydicom-data's files when it is installed) that
`gateway.dicomio.read_for_deid` accepts. A test that takes a `corpus_file` argument is
parametrized over it, one test per file (so pytest-xdist spreads the files over workers).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import data_store
import pydicom.data
import pytest

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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`corpus_file` → one test per corpus file; a test module's `CORPUS_XFAIL` (corpus id →
    reason) marks the files that reveal a known engine bug as strict xfails."""
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
