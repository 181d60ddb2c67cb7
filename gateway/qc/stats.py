"""Per-series statistics from headers and from a bounded sample of slices.

Pixels are read in Hounsfield units for CT (stored values through the Modality LUT otherwise).
For CT the body mask is every pixel above -500 HU; air is what lies below it (padding excluded),
the soft-tissue reference is the body's values between -200 and 300 HU, and noise is the median
standard deviation of 8x8 blocks lying wholly inside soft tissue: anatomy's edges barely move it.
Other modalities have no calibrated scale: their body mask is the pixels above the slice's Otsu
threshold, and noise the median standard deviation of 8x8 blocks wholly inside that mask.
One slice of each series (the middle one sampled) is also clustered by intensity (K-means, k from
2 to 4 by the best silhouette score; gateway.qc.cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from gateway.deid.dummies import TEXT as DUMMY_TEXT
from gateway.deid.keyed import keyed_hash
from gateway.qc.hu import modality_values

BODY_HU = -500.0
AIR_FLOOR_HU = -1100.0  # below this: padding outside the field of view, not air
TISSUE_HU = (-200.0, 300.0)
BLOCK = 8
DEFAULT_SLICES = 5
UNIT_DIGITS = 8
UNKNOWN_MODEL = "unknown model"  # no Manufacturer and no Model Name


@dataclass
class SeriesStats:
    """What one series looks like: where it came from, how it was acquired, what its pixels hold.
    `label` names the series without any identifier (machine, series number, description)."""

    label: str
    machine: str
    model: str
    modality: str
    files: int
    sampled: int
    rows: int | None = None
    columns: int | None = None
    pixel_spacing: float | None = None
    slice_thickness: float | None = None
    kvp: float | None = None
    exposure_mas: float | None = None
    kernel: str | None = None
    mean: float | None = None
    std: float | None = None
    p5: float | None = None
    p50: float | None = None
    p95: float | None = None
    air: float | None = None
    tissue: float | None = None
    noise: float | None = None
    clusters: int | None = None
    silhouette: float | None = None
    centers: list[float] | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _num(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        if value is None or value == "":
            return None
        if isinstance(value, pydicom.multival.MultiValue | list | tuple):
            value = value[0]
        return round(float(value), 3)
    except (TypeError, ValueError, IndexError):
        return None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = "\\".join(str(v) for v in value)
    return str(value).strip() if value not in (None, "") else ""


def machine_of(ds: Dataset, key: bytes | None = None) -> tuple[str, str]:
    """(machine, model): the model is Manufacturer + Model Name; the machine adds the Device
    Serial Number (else the Station Name) so two scanners of one model are told apart. With the
    site `key` that value is replaced by its keyed hash (UNIT_DIGITS hex digits): the scanner is
    still told apart, by a name that does not reveal it (for reports made to be shared)."""
    model = " ".join(x for x in (_text(ds, "Manufacturer"),
                                 _text(ds, "ManufacturerModelName")) if x) or UNKNOWN_MODEL
    unit = next((u for u in (_text(ds, "DeviceSerialNumber"), _text(ds, "StationName"))
                 if u and u != DUMMY_TEXT), "")  # a de-identifier's dummy names no scanner
    if unit and key is not None:
        unit = keyed_hash(key, unit, UNIT_DIGITS)
    return (f"{model} #{unit}" if unit else model), model


def sample(items: Sequence, n: int) -> list:
    """At most `n` items spread evenly over `items` (first and last included)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def block_noise(values: np.ndarray, mask: np.ndarray) -> float | None:
    """Median standard deviation of the BLOCKxBLOCK blocks wholly inside `mask`."""
    h, w = (values.shape[0] // BLOCK) * BLOCK, (values.shape[1] // BLOCK) * BLOCK
    if h == 0 or w == 0:
        return None
    v = values[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2)
    m = mask[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK).swapaxes(1, 2)
    inside = m.all(axis=(2, 3))
    if not inside.any():
        return None
    return float(np.median(v[inside].reshape(-1, BLOCK * BLOCK).std(axis=1)))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The intensity that best splits `values` into two classes (Otsu: the largest
    between-class variance of a `bins`-bin histogram)."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mass = np.cumsum(hist * centers)
    w0, w1 = weight[:-1], total - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * w0 / total - mass[:-1]) ** 2 / (w0 * w1)
    between = np.nan_to_num(between, nan=-1.0, posinf=-1.0)
    return float(edges[int(np.argmax(between)) + 1])


def body_mask(values: np.ndarray, modality: str) -> np.ndarray:
    """The pixels of the body: above BODY_HU for CT, above the Otsu threshold otherwise (all of
    them when the slice is uniform)."""
    if modality == "CT":
        return values > BODY_HU
    if values.max() <= values.min():
        return np.ones(values.shape, dtype=bool)
    return values > otsu_threshold(values)


def _median(xs: list[float]) -> float | None:
    return round(float(np.median(xs)), 2) if xs else None


def series_stats(paths: Sequence[str | Path], *, slices: int = DEFAULT_SLICES,
                 headers: Sequence[Dataset] | None = None, clusters: bool = True,
                 machine: str | None = None) -> SeriesStats:
    """Statistics of one series from its files (sorted by Instance Number), reading the pixels
    of at most `slices` of them. `headers` are the files' headers if already read; `clusters`
    also clusters the middle sampled slice by intensity (scikit-learn); `machine` names the
    machine when the headers cannot (de-identified files: see fleet_qc)."""
    if headers is None:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: (_num(headers[i], "InstanceNumber") or 0))
    first = headers[order[0]]
    named, model = machine_of(first)
    machine = machine or named
    modality = _text(first, "Modality") or "?"
    number = _text(first, "SeriesNumber")
    desc = _text(first, "SeriesDescription")
    label = " ".join(x for x in (machine, f"series {number}" if number else "", desc) if x)
    spacing = first.get("PixelSpacing")
    st = SeriesStats(
        label=label, machine=machine, model=model, modality=modality, files=len(paths),
        sampled=0, rows=_num(first, "Rows"), columns=_num(first, "Columns"),
        pixel_spacing=round(float(spacing[0]), 3) if spacing else None,
        slice_thickness=_num(first, "SliceThickness"), kvp=_num(first, "KVP"),
        exposure_mas=_num(first, "Exposure"), kernel=_text(first, "ConvolutionKernel") or None)
    if st.rows is not None:
        st.rows, st.columns = int(st.rows), int(st.columns or 0)
    body_values, airs, tissues, noises = [], [], [], []
    picked = sample(order, slices)
    middle: np.ndarray | None = None
    for n, i in enumerate(picked):
        try:
            ds = pydicom.dcmread(paths[i])
            hu = modality_values(ds)
        except Exception as exc:  # one bad slice must not stop the fleet's QC
            st.errors.append(f"{Path(paths[i]).name}: {exc}")
            continue
        st.sampled += 1
        if middle is None or n <= len(picked) // 2:
            middle = hu
        body = body_mask(hu, modality)
        if body.any():
            body_values.append(hu[body])
        if modality != "CT":
            noise = block_noise(hu, body)
            if noise is not None:
                noises.append(noise)
            continue
        air = hu[(~body) & (hu > AIR_FLOOR_HU)]
        tissue = body & (hu >= TISSUE_HU[0]) & (hu <= TISSUE_HU[1])
        if air.size:
            airs.append(float(np.median(air)))
        if tissue.any():
            tissues.append(float(np.median(hu[tissue])))
        noise = block_noise(hu, tissue)
        if noise is not None:
            noises.append(noise)
    if clusters and middle is not None:
        from gateway.qc.cluster import best_slice_clusters

        try:
            found = best_slice_clusters(middle)
        except ValueError as exc:  # e.g. values scikit-learn refuses: the rest still stands
            st.errors.append(f"intensity clustering: {exc}")
            found = None
        if found is not None:
            st.clusters, st.silhouette, st.centers = found.k, found.silhouette, list(found.centers)
    if body_values:
        allv = np.concatenate([b.ravel() for b in body_values])
        st.mean, st.std = round(float(allv.mean()), 2), round(float(allv.std()), 2)
        st.p5, st.p50, st.p95 = (round(float(x), 2) for x in np.percentile(allv, [5, 50, 95]))
    st.air, st.tissue, st.noise = _median(airs), _median(tissues), _median(noises)
    return st
