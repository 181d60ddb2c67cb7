"""Fixtures of the session tests."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sessionhelpers import copy_corpus


@pytest.fixture(scope="module")
def dump(corpus: tuple[Path, ...], batch_folder: Any,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dump: the whole corpus, and the planted batch folder (good and malformed files). The
    planted good files get SOP Instance UIDs of their own: they were made from corpus files."""
    root = copy_corpus(corpus, tmp_path_factory.mktemp("dump") / "dump")
    shutil.copytree(batch_folder.root, root / "planted")
    for good in batch_folder.good:
        target = root / "planted" / good.relative_to(batch_folder.root)
        ds = pydicom.dcmread(target)
        uid = "2.25." + str(int(hashlib.sha256(str(good).encode()).hexdigest()[:30], 16))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(target, enforce_file_format=True)
    return root
