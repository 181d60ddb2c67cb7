"""Certificates made by openssl for the tests: a CA and a syslog collector's certificate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def collector_pki(folder: Path) -> Path:
    """In `folder`: ca.pem/ca.key, and collector.pem/collector.key for 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found on PATH (install the Debian package to run this test)")
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=Test Audit CA", cwd=folder)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "collector.key", "-out",
            "collector.csr", "-subj", "/CN=collector", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "collector.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "collector.pem", "-days", "2", "-extfile", "san.cnf",
            cwd=folder)
    return folder
