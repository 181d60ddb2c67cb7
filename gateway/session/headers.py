"""The index row of one file, read from its header (run in ingest's workers).

Kept apart from gateway.session.ingest so that a re-ingest that finds nothing new never imports
pydicom: ingest imports this module only when there are files to read, before it forks.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from gateway.deid.signatures import machine_signature
from gateway.deid.values import stored_text
from gateway.dicomio import DicomReadError, read_for_deid
from gateway.safetext import safe_message

# column -> tag read from the header (as stored; text decoded only when not ASCII)
HEADER_COLUMNS = {
    "sop_class_uid": 0x00080016, "sop_instance_uid": 0x00080018,
    "manufacturer": 0x00080070, "model": 0x00081090, "modality": 0x00080060,
    "patient_id": 0x00100020, "patient_name": 0x00100010, "patient_birth_date": 0x00100030,
    "patient_sex": 0x00100040, "study_uid": 0x0020000D, "study_date": 0x00080020,
    "study_description": 0x00081030, "accession_number": 0x00080050,
    "series_uid": 0x0020000E, "series_number": 0x00200011, "series_description": 0x0008103E,
    "instance_number": 0x00200013, "burned_in": 0x00280301,
}
NUMBER_COLUMNS = {"rows": 0x00280010, "columns": 0x00280011, "frames": 0x00280008}
# every column a row read from a file sets: an unreadable file leaves them empty
EMPTY_ROW: dict[str, Any] = dict.fromkeys(
    (*HEADER_COLUMNS, *NUMBER_COLUMNS, "transfer_syntax", "signature"))


def _text(ds: Dataset, tag: int) -> str:
    try:
        return stored_text(ds, tag)
    except Exception:  # noqa: BLE001 - an undecodable value indexes as empty
        return ""


def _number(ds: Dataset, tag: int) -> int | None:
    try:
        return int(float(stored_text(ds, tag).split("\\")[0]))
    except Exception:  # noqa: BLE001 - not a number, or undecodable: indexed as unknown
        return None


def read_index_row(path: str) -> dict[str, Any]:
    """The index row of one file: header columns, or the reader's reason (the caller fills
    the other columns of an unreadable file from EMPTY_ROW)."""
    try:
        ds = read_for_deid(path).ds
    except DicomReadError as exc:
        return {"state": "unreadable", "reason": f"{exc.kind}: {exc.problem}"}
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the ingest
        return {"state": "unreadable", "reason": f"unreadable: {safe_message(exc)}"}
    row: dict[str, Any] = {"state": "ok", "reason": None}
    for column, tag in HEADER_COLUMNS.items():
        row[column] = _text(ds, tag)
    for column, tag in NUMBER_COLUMNS.items():
        row[column] = _number(ds, tag)
    row["transfer_syntax"] = str(ds.file_meta.TransferSyntaxUID)
    try:
        row["signature"] = machine_signature(ds)
    except Exception:  # noqa: BLE001
        row["signature"] = ""
    return row
