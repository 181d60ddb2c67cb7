"""What a report is made of when there is no curation session: a folder of DICOM files, or the
state of a gateway node. Each gives report objects (gateway.qc.report.ReportObject) and says in
`notes` what it could not show."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom

from gateway.qc.fleet import files_under
from gateway.qc.report import Box, ReportObject
from gateway.qc.stats import machine_of

if TYPE_CHECKING:
    from gateway.deid.redact import Redactor
    from gateway.statedir import StateDir

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


def planned_redaction(redactor: Redactor, header: pydicom.Dataset) -> tuple[tuple[Box, ...], bool]:
    """What the pipeline does to the pixels of the object of `header` under `redactor`: the
    boxes of the rule that covers it (clipped to the image), and whether it is at risk with no
    rule (so that any redaction of it is OCR's). ((), False) when the header cannot tell."""
    from gateway.deid.redact import clip_regions

    try:
        decision = redactor.decide(header)
        boxes = tuple(clip_regions(decision.regions, int(header.Rows), int(header.Columns)))
    except (ValueError, AttributeError, TypeError):
        return (), False
    return boxes, decision.refused


@dataclass(frozen=True)
class NodeJob:
    """One job of a gateway node as its store records it (no identifier in any field)."""

    job_id: str
    state: str
    reason: str | None
    machine: str
    modality: str


def _header(path: Path | None) -> pydicom.Dataset | None:
    if path is None:
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # a file the node could not parse (the reason it is quarantined)
        return None


def node_source(jobs: Iterable[NodeJob], state: StateDir, redactor: Redactor, *,
                output_only: bool, key: bytes | None) -> Source:
    """What a gateway node still holds of each job in its `state` directory: the original while
    it waits to be forwarded or sits in quarantine ('before'), the de-identified copy while it
    waits in the outbox ('after'), the redaction the `redactor` planned for that copy. With
    `output_only` no original is shown, and the QC, of the outbox copies, names scanners by
    their keyed serial number (`key`)."""
    objects: list[ReportObject] = []
    qc_files: list[Path] = []
    machines: dict[str, str] = {}
    delivered = originals = outputs = 0
    for job in jobs:
        original = state.original(job.job_id)
        output: Path | None = state.output(job.job_id)
        if job.state != "forwarding" or not output.exists():
            output = None
        delivered += job.state == "delivered"
        originals += original is not None
        outputs += output is not None
        header = _header(original) if original is not None else None
        source_header = header if header is not None else _header(output)
        boxes, by_ocr = ((), False)
        if output is not None and source_header is not None:  # else nothing was redacted
            boxes, by_ocr = planned_redaction(redactor, source_header)
        objects.append(ReportObject(
            job.machine, job.modality, job.state,
            job.reason if job.state == "quarantined" else None,
            original=None if output_only else original, output=output, boxes=boxes,
            by_ocr=by_ocr))
        if output_only and output is not None:
            qc_files.append(output)
            named = machine_of(header, key)[0] if header is not None else None
            if named:
                machines[str(output)] = named
        elif not output_only and original is not None:
            qc_files.append(original)
    notes = []
    if delivered:
        notes.append(f"{delivered} delivered object(s): the node keeps neither the original "
                     "nor the de-identified copy once its destinations have it, so they have no "
                     "thumbnail and are not in the QC")
    if output_only:
        notes.append(f"after: the {outputs} de-identified copies still in the outbox, waiting "
                     "for their destination (the QC is of them); originals are not shown")
    else:
        notes.append(f"before: the {originals} originals the node still holds (quarantined, or "
                     f"waiting to be forwarded; the QC is of them); after: the {outputs} "
                     "de-identified copies still in the outbox")
    return Source(objects, qc_files, notes, machines)
