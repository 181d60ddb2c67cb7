"""The Dockerfile builds what pyproject.toml packages: every top-level package is copied into
the image, and the OCR extra and its model are installed (redaction checks need them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_packaged_top_level_package_is_copied_into_the_image() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    assert packages, "pyproject.toml names no package"
    copied = set(re.findall(r"^COPY (\S+) \./\1\s*$", (ROOT / "Dockerfile").read_text(), re.M))
    for name in packages:
        assert (ROOT / name / "__init__.py").is_file(), f"{name}: no such package"
        assert name in copied, f"the Dockerfile does not copy the {name}/ package"


def test_the_image_installs_ocr_and_its_model() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*\.\[[^\]]*\bocr\b", text), "the OCR extra is missing"
    assert "tesseract-ocr-eng" in text, "Tesseract's English model is not installed"
