"""Fleet QC: files grouped into series, each series measured, machines summed up, outliers."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from gateway.qc.outliers import Outlier, find_outliers
from gateway.qc.stats import DEFAULT_SLICES, SeriesStats, series_stats

SUMMARY = ("kvp", "exposure_mas", "slice_thickness", "pixel_spacing", "mean", "p50", "air",
           "tissue", "noise")


def slice_clustering(group: list[SeriesStats]) -> dict | None:
    """The intensity clustering of a machine's series: the most common k, how many series chose
    it, the median silhouette and the median cluster centres of those series."""
    done = [s for s in group if s.clusters is not None and s.centers]
    if not done:
        return None
    ks = Counter(s.clusters for s in done)
    k, n = max(ks.items(), key=lambda kv: (kv[1], -kv[0]))
    chose = [s for s in done if s.clusters == k]
    centers = np.median(np.array([s.centers for s in chose], dtype=float), axis=0)
    return {"k": k, "series": n, "of": len(done),
            "silhouette": round(float(np.median([s.silhouette for s in chose])), 3),
            "centers": [round(float(c), 1) for c in centers]}


@dataclass
class QCResult:
    """The fleet's series statistics, a per-machine summary and the outliers with reasons."""

    series: list[SeriesStats]
    outliers: list[Outlier]
    unreadable: list[str] = field(default_factory=list)

    def machines(self) -> dict[str, dict]:
        """Per machine: model, modalities, series and file counts, medians of the measures. A
        machine whose series are of several modalities (most often "unknown model": files that
        name no manufacturer) gets a row per modality, "machine (MR)", so that no median mixes
        a CT's Hounsfield units with another modality's values."""
        groups: dict[tuple[str, str], list[SeriesStats]] = defaultdict(list)
        for s in self.series:
            groups[(s.machine, s.modality)].append(s)
        several = Counter(machine for machine, _ in groups)
        modality_of = {s.label: s.modality for s in self.series}
        out = {}
        for (machine, modality), group in sorted(groups.items()):
            row: dict = {"model": group[0].model, "modalities": [modality],
                         "series": len(group), "files": sum(s.files for s in group),
                         "outliers": [o.reason for o in self.outliers if o.machine == machine
                                      and modality_of.get(o.label) == modality]}
            for key in SUMMARY:
                xs = [getattr(s, key) for s in group if getattr(s, key) is not None]
                row[key] = round(float(np.median(xs)), 2) if xs else None
            row["slice_clusters"] = slice_clustering(group)
            out[f"{machine} ({modality})" if several[machine] > 1 else machine] = row
        return out

    def flagged_machines(self) -> list[str]:
        return sorted({o.machine for o in self.outliers})

    def as_dict(self) -> dict:
        return {"machines": self.machines(),
                "series": [s.as_dict() for s in self.series],
                "outliers": [o.as_dict() for o in self.outliers],
                "unreadable": self.unreadable}


def files_under(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Every file under `paths` (files or folders, sorted); ValueError names a missing one."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or folder")
    return out


def fleet_qc(paths: Iterable[str | os.PathLike], *, slices: int = DEFAULT_SLICES,
             clusters: bool = True, machines: Mapping[str, str] | None = None) -> QCResult:
    """QC of every DICOM file under `paths` (files or folders): series grouped by Series
    Instance UID, at most `slices` slices of each read for pixel statistics; `clusters` also
    clusters one slice of each series by intensity. `machines` names the machine of a file (by
    its path as text) when its own header cannot: de-identified files have lost the serial
    number that tells two scanners of one model apart, and their caller knows it, keyed."""
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    unreadable: list[str] = []
    for f in files_under(paths):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            unreadable.append(f"{f}: not readable as DICOM ({type(exc).__name__})")
            continue
        if "SeriesInstanceUID" not in ds:
            unreadable.append(f"{f}: no Series Instance UID")
            continue
        groups[str(ds.SeriesInstanceUID)].append((f, ds))
    series = []
    for members in groups.values():
        named = (machines or {}).get(str(members[0][0]))
        series.append(series_stats([p for p, _ in members], slices=slices,
                                   headers=[d for _, d in members], clusters=clusters,
                                   machine=named))
    series.sort(key=lambda s: s.label)
    seen: dict[str, int] = defaultdict(int)
    for s in series:  # de-identified series may share a label: number the repeats
        seen[s.label] += 1
        if seen[s.label] > 1:
            s.label = f"{s.label} [{seen[s.label]}]"
    return QCResult(series=series, outliers=find_outliers(series), unreadable=unreadable)
