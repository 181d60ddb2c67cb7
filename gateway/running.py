"""What configuration the running node uses: a small record in its state directory
(`node.json`), written by the node when it starts and at every reload, read by the commands
that act on a running node (`gantry reload`, `gantry quarantine release`, `gantry status`).

The record holds the configuration file's path and the SHA-256 of its bytes as loaded, so a
command can tell whether the file has changed since the node read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD = "node.json"


def file_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 (hex) of a file's bytes, None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class NodeRecord:
    """The running node: its pid, the configuration it uses and its last reload."""

    pid: int
    config: str  # absolute path of the configuration file
    digest: str | None  # SHA-256 of the file as loaded
    loaded_at: float
    reloads: int = 0  # reload attempts answered (refused ones included)
    refused: str | None = None  # the last attempt's problem, None when it was taken
    restart_needed: tuple[str, ...] = ()  # changed sections that only a restart applies

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at))
        return f"{self.config} as loaded at {when} (sha256 {(self.digest or '?')[:12]})"

    def file_changed(self) -> bool:
        """The configuration file differs from what the node loaded (or is gone)."""
        return file_digest(self.config) != self.digest


def write(root: Path, record: NodeRecord) -> None:
    """Replace the record atomically (owner-only)."""
    tmp = root / f".{RECORD}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, root / RECORD)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(root: Path) -> NodeRecord | None:
    """The record of the node running on `root`, None when no node runs there (no record,
    or its process is gone, or the lock names another process)."""
    try:
        data = json.loads((root / RECORD).read_text())
        record = NodeRecord(**{**data, "restart_needed": tuple(data.get("restart_needed", ()))})
        holder = (root / "node.lock").read_text().strip()
    except (OSError, ValueError, TypeError):
        return None
    if holder != str(record.pid) or not _alive(record.pid):
        return None
    return record
