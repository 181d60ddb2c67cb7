"""What a report is made of when there is no curation session: a folder of DICOM files, or the
state of a gateway node. Each gives report objects (gateway.qc.report.ReportObject) and says in
`notes` what it could not show."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from gateway.qc.fleet import files_under
from gateway.qc.report import ReportObject
from gateway.qc.stats import machine_of

DEIDENTIFIED, RAW, UNREADABLE = "de-identified", "not de-identified", "unreadable"


@dataclass
class Source:
    """Report objects, the files the QC is computed over, and what could not be shown."""

    objects: list[ReportObject]
    qc_files: list[Path]
    notes: list[str] = field(default_factory=list)
    machines: dict[str, str] = field(default_factory=dict)  # QC file -> machine name


def folder_source(paths: Iterable[str | os.PathLike], *, output_only: bool) -> Source:
    """Every file under `paths`. A file that declares itself de-identified (Patient Identity
    Removed YES) is shown as an 'after'; any other DICOM file as a 'before', or with
    `output_only` left out: counted, nothing read from it shown."""
    objects: list[ReportObject] = []
    left_out = 0
    for path in files_under(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or too damaged to read: counted as such
            objects.append(ReportObject("not readable as DICOM", "?", UNREADABLE))
            continue
        modality = str(ds.get("Modality", "") or "?")
        if str(ds.get("PatientIdentityRemoved", "")).strip().upper() == "YES":
            objects.append(ReportObject(machine_of(ds)[0], modality, DEIDENTIFIED, output=path))
        elif output_only:
            left_out += 1
            objects.append(ReportObject("left out (not de-identified)", modality, RAW))
        else:
            objects.append(ReportObject(machine_of(ds)[0], modality, RAW, original=path))
    notes = []
    if left_out:
        notes.append(f"{left_out} file(s) do not declare their patient identity removed: "
                     "left out of this report, nothing of them is shown")
    if any(o.outcome == DEIDENTIFIED for o in objects):
        notes.append("de-identified files name their machine by what their header kept: "
                     "scanners of one model whose serial number was removed are one machine")
    shown = [o.output or o.original for o in objects]
    return Source(objects, [p for p in shown if p is not None], notes)
