"""The visual report: one self-contained HTML page (Jinja2 template, images inlined as data: URIs).

It shows counts per machine, modality and outcome, the audit's risk summary, quarantine reasons
grouped, the QC tables, outliers and plots, and per machine a contact sheet of windowed
thumbnails, before and after de-identification, the redaction boxes drawn on the before. A report
with originals says at its top that it shows patient data; `output_only` makes one from
de-identified objects alone.
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from gateway.qc.fleet import QCResult
from gateway.qc.hu import modality_values, object_window, window
from gateway.qc.stats import machine_of

THUMB = 160  # longest side of a thumbnail, pixels
PER_MACHINE = 6  # thumbnails per machine's contact sheet


@dataclass(frozen=True)
class ReportObject:
    """One object as the report sees it. `boxes` are redaction rectangles as (row0, row1, col0,
    col1) in the original's pixels; `reason` is identifier-free (a quarantine reason)."""

    machine: str
    modality: str
    outcome: str  # exported | quarantined | duplicate | pending
    reason: str | None = None
    original: Path | None = None
    output: Path | None = None
    boxes: tuple[tuple[int, int, int, int], ...] = ()


def png_uri(image: object) -> str:
    """A Pillow image as a data: URI of a PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # type: ignore[attr-defined]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail(path: str | os.PathLike, boxes: Iterable[tuple[int, int, int, int]] = ()) -> str:
    """The first frame of `path` in its own window, at most THUMB pixels a side, with `boxes`
    outlined in red, as a data: URI. ValueError names the file if it cannot be shown."""
    from PIL import Image, ImageDraw

    try:
        ds = pydicom.dcmread(path)
        values = modality_values(ds)
    except Exception as exc:  # any reading or decoding failure: say which file
        raise ValueError(f"{path}: cannot make a thumbnail ({exc})") from None
    grey = window(values, *object_window(ds, values))
    image = Image.fromarray(np.ascontiguousarray(grey)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for r0, r1, c0, c1 in boxes:
        draw.rectangle([c0, r0, c1 - 1, r1 - 1], outline=(255, 40, 40),
                       width=max(1, max(image.size) // 128))
    image.thumbnail((THUMB, THUMB))
    return png_uri(image)


def _sheets(objects: Sequence[ReportObject], output_only: bool) -> dict[str, list[dict]]:
    """Per machine, up to PER_MACHINE pairs of thumbnails (before is None when output_only)."""
    sheets: dict[str, list[dict]] = defaultdict(list)
    for obj in objects:
        if len(sheets[obj.machine]) >= PER_MACHINE:
            continue
        if output_only and obj.output is None:
            continue
        pair: dict = {"outcome": obj.outcome, "reason": obj.reason, "before": None,
                      "after": None, "boxes": len(obj.boxes), "problem": None}
        try:
            if not output_only and obj.original is not None:
                pair["before"] = thumbnail(obj.original, obj.boxes)
            if obj.output is not None:
                pair["after"] = thumbnail(obj.output, obj.boxes)
        except ValueError as exc:
            pair["problem"] = str(exc) if not output_only else "cannot make a thumbnail"
        if pair["before"] or pair["after"] or pair["problem"]:
            sheets[obj.machine].append(pair)
    return {machine: pairs for machine, pairs in sheets.items() if pairs}


def output_objects(paths: Iterable[str | os.PathLike], outcome: str = "exported"
                   ) -> list[ReportObject]:
    """De-identified files as report objects (machine and modality from their headers)."""
    objects = []
    for p in sorted(Path(x) for x in paths):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # not DICOM: not an object of the report
            continue
        objects.append(ReportObject(machine_of(ds)[0], str(ds.get("Modality", "") or "?"),
                                    outcome, output=p))
    return objects


def write_report(path: str | os.PathLike, objects: Sequence[ReportObject], *,
                 qc: QCResult | None = None, risk: Sequence[tuple[str, int]] = (),
                 output_only: bool = False, title: str = "Gantry report",
                 plots: bool = True, notes: Sequence[str] = ()) -> Path:
    """Write the report to `path` and return it. `objects` are every object considered;
    `qc` the fleet QC to show (computed over outputs for an output-only report); `risk` the
    audit's (level, count) rows; `notes` what the report could not show, and why."""
    import jinja2

    counts: dict[str, Counter] = defaultdict(Counter)
    modalities: Counter = Counter()
    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    for obj in objects:
        counts[obj.machine][obj.outcome] += 1
        modalities[obj.modality or "?"] += 1
        outcomes[obj.outcome] += 1
        if obj.outcome == "quarantined":
            reasons[obj.reason or "no reason recorded"] += 1
    outcome_names = sorted(outcomes)
    images: list[tuple[str, str]] = []
    clustering = None
    if qc is not None and qc.series:
        from gateway.qc.cluster import fleet_clusters

        found = fleet_clusters(qc.series)
        if found is not None:
            ct = [s for s in qc.series if s.modality == "CT"]
            members: dict[int, set[str]] = defaultdict(set)
            for s, label in zip(ct, found.labels, strict=False):
                members[label].add(s.machine)
            clustering = {"k": found.k, "silhouette": found.silhouette,
                          "groups": [(c + 1, found.labels.count(c), sorted(members[c]))
                                     for c in sorted(members)]}
    if plots and qc is not None and qc.series:
        from gateway.qc.plots import plot_uris

        images = plot_uris(qc)
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.qc", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.get_template("report.html.j2").render(
        title=title, output_only=output_only, total=len(objects),
        machines=sorted(counts), counts=counts, outcome_names=outcome_names,
        modalities=sorted(modalities.items()), outcomes=sorted(outcomes.items()),
        reasons=reasons.most_common(), risk=list(risk),
        qc_machines=qc.machines() if qc else {}, outliers=qc.outliers if qc else [],
        clustering=clustering, plots=images, sheets=_sheets(objects, output_only),
        notes=list(notes))
    out = Path(path)
    out.write_text(html, encoding="utf-8")
    return out
