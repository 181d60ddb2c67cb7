"""Stored pixel values to Hounsfield units (the Modality LUT) and windowing for previews."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

# Window presets (center, width) in HU, as radiologists commonly read CT.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40, 80),
    "subdural": (75, 215),
    "stroke": (40, 40),
    "lung": (-600, 1500),
    "mediastinum": (50, 350),
    "abdomen": (50, 400),
    "liver": (30, 150),
    "bone": (400, 1800),
}


def modality_values(ds: Dataset, frame: int = 0) -> np.ndarray:
    """One frame of `ds` through its Modality LUT (Rescale Slope/Intercept or the LUT), as
    float32: Hounsfield units for CT. Raises ValueError naming the problem if the pixels
    cannot be decoded."""
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds for undecodable pixel data
        raise ValueError(f"pixel data cannot be decoded: {type(exc).__name__}") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[min(frame, frames - 1)]
    if arr.ndim == 3:  # colour: its luminance
        arr = arr[..., :3].mean(axis=-1)
        return arr.astype(np.float32)
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def object_window(ds: Dataset, values: np.ndarray) -> tuple[float, float]:
    """The object's own VOI window (its first Window Center/Width), else the values' 1st-99th
    percentile range."""
    try:
        c, w = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    except (TypeError, ValueError):
        c = w = None
    if c is not None and w is not None and w > 0:
        return c, w
    lo, hi = np.percentile(values, [1, 99])
    return float((lo + hi) / 2), float(max(hi - lo, 1.0))


def _first(value: object) -> float | None:
    """A window element's first value as a float (None if absent)."""
    if value is None or value == "":
        return None
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0]) if len(value) else None
    return float(value)  # type: ignore[arg-type]


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """`values` mapped through a linear window to 8-bit grey levels (0 below, 255 above)."""
    lo = center - width / 2
    out = (values.astype(np.float32) - lo) / max(width, 1e-6) * 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def preset(name: str) -> tuple[float, float]:
    """The (center, width) of a named preset; ValueError lists the known names."""
    try:
        return WINDOWS[name]
    except KeyError:
        raise ValueError(f"unknown window preset {name!r}; known: {', '.join(WINDOWS)}") from None
