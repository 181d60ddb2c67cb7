"""A session's objects as the QC report sees them: originals, their latest export's outputs and
outcomes, the redaction the configuration plans for each (gateway.qc.report draws the boxes where
the export redacted pixels)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pydicom

from gateway.config import Config
from gateway.deid.redact import Redactor
from gateway.qc.report import ReportObject
from gateway.qc.sources import planned_redaction
from gateway.qc.stats import machine_of


def latest_export(db: sqlite3.Connection) -> str | None:
    """The export folder written to last (None before any export)."""
    row = db.execute("SELECT out FROM exports ORDER BY rowid DESC LIMIT 1").fetchone()
    return row[0] if row else None


def report_objects(db: sqlite3.Connection, config: Config, key: bytes | None = None
                   ) -> list[ReportObject]:
    """Every readable, non-duplicate file of the session with its latest export's outcome
    ('pending' if not exported), its machine (gateway.qc.stats.machine_of: with the site `key`,
    the serial number keyed, for a report of outputs alone) and its planned redaction
    (gateway.qc.sources.planned_redaction) when it was exported."""
    out = latest_export(db)
    rows = db.execute(
        "SELECT f.path, f.manufacturer, f.model, f.modality, e.outcome, e.path, e.reason "
        "FROM files f LEFT JOIN exports e ON e.file_id = f.id AND e.out = ? "
        "WHERE f.state = 'ok' AND f.duplicate_of IS NULL ORDER BY f.path", [out]).fetchall()
    redactor = Redactor(config.redaction, config.base_dir)
    objects = []
    for path, maker, model, modality, outcome, written, reason in rows:
        machine = " ".join(x for x in (maker, model) if x) or "unknown machine"
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
            machine = machine_of(header, key)[0]
        except (OSError, ValueError, AttributeError, TypeError):
            header = None
        output = Path(written) if outcome == "exported" and written else None
        boxes, by_ocr = ((), False)
        if output is not None and header is not None:  # else nothing was redacted
            boxes, by_ocr = planned_redaction(redactor, header)
        objects.append(ReportObject(
            machine=machine, modality=modality or "?", outcome=outcome or "pending",
            reason=reason if outcome == "quarantined" else None, original=Path(path),
            output=output, boxes=boxes, by_ocr=by_ocr))
    return objects
