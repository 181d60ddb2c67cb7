"""Per-series statistics from headers and from a bounded sample of slices.

Pixels are read in Hounsfield units for CT (stored values through the Modality LUT otherwise).
The body mask is every pixel above -500 HU; air is what lies below it (padding excluded), the
soft-tissue reference is the body's values between -200 and 300 HU, and noise is the median
standard deviation of 8x8 blocks lying wholly inside soft tissue: anatomy's edges barely move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from gateway.qc.hu import modality_values

BODY_HU = -500.0
AIR_FLOOR_HU = -1100.0  # below this: padding outside the field of view, not air
TISSUE_HU = (-200.0, 300.0)
BLOCK = 8
DEFAULT_SLICES = 5


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


def machine_of(ds: Dataset) -> tuple[str, str]:
    """(machine, model): the model is Manufacturer + Model Name; the machine adds the Device
    Serial Number (else the Station Name) so two scanners of one model are told apart."""
    model = " ".join(x for x in (_text(ds, "Manufacturer"),
                                 _text(ds, "ManufacturerModelName")) if x) or "unknown model"
    unit = _text(ds, "DeviceSerialNumber") or _text(ds, "StationName")
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


def _median(xs: list[float]) -> float | None:
    return round(float(np.median(xs)), 2) if xs else None


def series_stats(paths: Sequence[str | Path], *, slices: int = DEFAULT_SLICES,
                 headers: Sequence[Dataset] | None = None) -> SeriesStats:
    """Statistics of one series from its files (sorted by Instance Number), reading the pixels
    of at most `slices` of them. `headers` are the files' headers if already read."""
    if headers is None:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: (_num(headers[i], "InstanceNumber") or 0))
    first = headers[order[0]]
    machine, model = machine_of(first)
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
    for i in sample(order, slices):
        try:
            ds = pydicom.dcmread(paths[i])
            hu = modality_values(ds)
        except Exception as exc:  # one bad slice must not stop the fleet's QC
            st.errors.append(f"{Path(paths[i]).name}: {exc}")
            continue
        st.sampled += 1
        if modality != "CT":
            body_values.append(hu[hu > hu.min()] if hu.max() > hu.min() else hu.ravel())
            continue
        body = hu > BODY_HU
        air = hu[(~body) & (hu > AIR_FLOOR_HU)]
        tissue = body & (hu >= TISSUE_HU[0]) & (hu <= TISSUE_HU[1])
        if body.any():
            body_values.append(hu[body])
        if air.size:
            airs.append(float(np.median(air)))
        if tissue.any():
            tissues.append(float(np.median(hu[tissue])))
        noise = block_noise(hu, tissue)
        if noise is not None:
            noises.append(noise)
    if body_values:
        allv = np.concatenate([b.ravel() for b in body_values])
        st.mean, st.std = round(float(allv.mean()), 2), round(float(allv.std()), 2)
        st.p5, st.p50, st.p95 = (round(float(x), 2) for x in np.percentile(allv, [5, 50, 95]))
    st.air, st.tissue, st.noise = _median(airs), _median(tissues), _median(noises)
    return st
