"""An in-process receiver (the real SCP on an ephemeral port) for the limits and TLS tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.config import parse_config
from gateway.net.receiver import Receiver
from gateway.statedir import StateDir


@contextmanager
def running_receiver(tmp_path: Path, routes=(), **network) -> Iterator[Receiver]:
    """A Receiver on 127.0.0.1 with these `network` settings (and routes, if any)."""
    cfg = parse_config({
        "network": {"ae_title": "GANTRY", "host": "127.0.0.1", "port": 0, **network},
        "destinations": {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 1}}
        if routes else {},
        "routes": [{"destinations": ["pacs"], **r} for r in routes]}, "<test>")
    state = StateDir(tmp_path / "state")
    rx = Receiver(cfg, b"k" * 32, state.db, state.spool)
    rx.start()
    try:
        yield rx
    finally:
        rx.stop_accepting()
        rx.abort_all()
        rx.close()
