"""The visual report: one self-contained HTML page (Jinja2 template, images inlined as data: URIs).

It shows counts per machine, modality and outcome, the audit's risk summary, quarantine reasons
grouped, the QC tables, outliers and plots, and per machine a contact sheet of windowed
thumbnails, before and after de-identification. Redaction boxes are drawn only where pixels were
redacted: on an object whose de-identified copy records Clean Pixel Data (the pipeline adds that
code only when it blanked something), the boxes of the rule that covers it, else (OCR redacted
it: the boxes are found at run time and not recorded) where the copy's pixels differ from the
original's, or, without the original, a line saying so. A report with originals says at its top
that it shows patient data; `output_only` makes one from de-identified objects alone.
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
CLEAN_PIXEL_DATA = "113101"  # the method code the pipeline adds when it blanked pixels
MAX_CHANGED = 0.25  # a larger share of pixels differing: before and after are not comparable
GLYPH_GAP = 4  # pixels between changed spots that still count as one box (letters of a word)

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ReportObject:
    """One object as the report sees it. `boxes` are the rectangles the rule that covers it
    blanks, as (row0, row1, col0, col1) in the original's pixels; `by_ocr`: at risk and no rule
    covers it, so a redaction of its pixels was OCR's; `reason` is identifier-free (a
    quarantine reason)."""

    machine: str
    modality: str
    outcome: str  # exported | quarantined | duplicate | pending
    reason: str | None = None
    original: Path | None = None
    output: Path | None = None
    boxes: tuple[Box, ...] = ()
    by_ocr: bool = False


def png_uri(image: object) -> str:
    """A Pillow image as a data: URI of a PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # type: ignore[attr-defined]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _frame(path: str | os.PathLike) -> tuple[pydicom.Dataset, np.ndarray]:
    """The dataset of `path` and its first frame through the Modality LUT; ValueError names the
    file if it cannot be shown."""
    try:
        ds = pydicom.dcmread(path)
        return ds, modality_values(ds)
    except Exception as exc:  # any reading or decoding failure: say which file
        raise ValueError(f"{path}: cannot make a thumbnail ({exc})") from None


def _thumb(ds: pydicom.Dataset, values: np.ndarray, boxes: Iterable[Box]) -> str:
    from PIL import Image, ImageDraw

    grey = window(values, *object_window(ds, values))
    image = Image.fromarray(np.ascontiguousarray(grey)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for r0, r1, c0, c1 in boxes:
        draw.rectangle([c0, r0, c1 - 1, r1 - 1], outline=(255, 40, 40),
                       width=max(1, max(image.size) // 128))
    image.thumbnail((THUMB, THUMB))
    return png_uri(image)


def thumbnail(path: str | os.PathLike, boxes: Iterable[Box] = ()) -> str:
    """The first frame of `path` in its own window, at most THUMB pixels a side, with `boxes`
    outlined in red, as a data: URI. ValueError names the file if it cannot be shown."""
    return _thumb(*_frame(path), boxes)


def pixels_redacted(ds: pydicom.Dataset) -> bool:
    """Whether a de-identified object records Clean Pixel Data among its method codes."""
    items = ds.get("DeidentificationMethodCodeSequence") or []
    return any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_DATA for item in items)


def changed_boxes(before: np.ndarray, after: np.ndarray) -> tuple[Box, ...] | None:
    """The rectangles around the pixels that differ between two decodings of one frame (spots
    closer than GLYPH_GAP merged: the letters of a word), all blanked to one value; None when
    the two are not comparable (other sizes, over MAX_CHANGED of the pixels differ, or they
    changed to more than one value: re-encoded, not blanked)."""
    from scipy import ndimage

    if before.shape != after.shape:
        return None
    changed = before != after
    if changed.mean() > MAX_CHANGED:
        return None
    labels, _ = ndimage.label(ndimage.binary_dilation(changed, iterations=GLYPH_GAP // 2))
    if np.unique(after[changed]).size > 1:
        return None
    spots = ndimage.find_objects(np.where(changed, labels, 0))
    return tuple((s[0].start, s[0].stop, s[1].start, s[1].stop) for s in spots if s is not None)


def _redaction(obj: ReportObject, after: pydicom.Dataset | None,
               before: np.ndarray | None, after_values: np.ndarray | None
               ) -> tuple[tuple[Box, ...], str | None]:
    """The boxes to draw on the object's thumbnails and what to say of them: none unless its
    de-identified copy records that pixels were redacted."""
    if after is None or not pixels_redacted(after):
        return (), None
    n = len(obj.boxes)
    if obj.boxes:
        return obj.boxes, f"{n} redaction box{'es' if n > 1 else ''}"
    how = " by OCR" if obj.by_ocr else ""
    found = None
    if before is not None and after_values is not None:
        found = changed_boxes(before, after_values)
    if not found:
        return (), f"pixels redacted{how}, boxes not shown"
    n = len(found)
    return found, f"{n} redaction box{'es' if n > 1 else ''}{how}"


def _sheets(objects: Sequence[ReportObject], output_only: bool) -> dict[str, list[dict]]:
    """Per machine, up to PER_MACHINE pairs of thumbnails (before is None when output_only)."""
    sheets: dict[str, list[dict]] = defaultdict(list)
    for obj in objects:
        if len(sheets[obj.machine]) >= PER_MACHINE:
            continue
        if output_only and obj.output is None:
            continue
        pair: dict = {"outcome": obj.outcome, "reason": obj.reason, "before": None,
                      "after": None, "redaction": None, "problem": None}
        try:
            before = after = None
            if not output_only and obj.original is not None:
                before = _frame(obj.original)
            if obj.output is not None:
                after = _frame(obj.output)
            boxes, pair["redaction"] = _redaction(
                obj, after[0] if after else None, before[1] if before else None,
                after[1] if after else None)
            if before is not None:
                pair["before"] = _thumb(*before, boxes)
            if after is not None:
                pair["after"] = _thumb(*after, boxes)
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
                 plots: bool = True, notes: Sequence[str] = (), counted: str = "") -> Path:
    """Write the report to `path` and return it. `objects` are every object considered;
    `qc` the fleet QC to show (computed over outputs for an output-only report); `risk` the
    audit's (level, count) rows; `notes` what the report could not show, and why; `counted`
    what its objects are, when "objects" alone would mislead."""
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
        notes=list(notes), counted=counted)
    out = Path(path)
    out.write_text(html, encoding="utf-8")
    return out
