"""The examine checkpoint of a session: the machine inventory (gateway.examine) of its
instances, under the session's configuration, read from the headers in forked workers."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from gateway.config import Config
from gateway.deid.redact import Redactor
from gateway.dicomio import read_for_deid
from gateway.examine import MachineEntry, MachineIndex, MachineRecord, machine_record
from gateway.session.parallel import run_parallel


@dataclass
class Inventory:
    """Machine signatures with counts, sizes, modalities, burned-in flags and rule coverage.
    Prints as a table; `records` are the per-machine entries, `as_json()` the same as JSON."""

    index: MachineIndex

    @property
    def records(self) -> list[MachineEntry]:
        return self.index.entries()

    def as_json(self) -> str:
        return self.index.as_json()

    def __str__(self) -> str:
        return self.index.table()


def _record(redactor: Redactor, path: str) -> MachineRecord | None:
    try:
        header = read_for_deid(path).ds
        return machine_record(header, redactor.decide(header))
    except Exception:  # noqa: BLE001 - changed since ingest: counted as unreadable
        return None


def examine(db: sqlite3.Connection, config: Config, workers: int | None = None,
            progress: bool = True) -> Inventory:
    redactor = Redactor(config.redaction, config.base_dir)
    index = MachineIndex(redactor)
    index.unreadable = db.execute(
        "SELECT count(*) FROM files WHERE state = 'unreadable'").fetchone()[0]
    paths = [r[0] for r in db.execute("SELECT path FROM files WHERE state = 'ok' AND "
                                      "duplicate_of IS NULL ORDER BY path").fetchall()]

    def on_result(_: int, record: MachineRecord | None) -> None:
        if record is None:
            index.unreadable += 1
        else:
            index.add_record(record)

    run_parallel(paths, lambda path: _record(redactor, path), on_result,
                 lambda i, how: on_result(i, None), "examining", workers, progress)
    return Inventory(index)
