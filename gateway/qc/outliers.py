"""Outliers among series of one machine model, by robust z-scores, each with its reason in words.

Series are compared within one model and modality. A series is an outlier on a measure when its
robust z-score (distance from the group's median in units of 1.4826 x the median absolute
deviation) exceeds Z_LIMIT *and* the difference matters in practice: a fleet of near-identical
scanners has a tiny spread, and a 3 HU difference is not a fault however many MADs it is.

CT is measured in Hounsfield units: air and soft tissue (off by MIN_SHIFT_HU or more) and noise
(NOISE_RATIO times the median or more, or as much less). Other modalities have no calibrated
scale: their median intensity inside the body mask (off by MIN_SHIFT_REL of the group's median
intensity or intensity range, whichever is larger), noise (NOISE_RATIO), image size and pixel
spacing (GEOMETRY_RATIO).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from gateway.qc.stats import SeriesStats

Z_LIMIT = 3.5
MIN_SHIFT_HU = 40.0
MIN_SHIFT_REL = 0.2
NOISE_RATIO = 1.5
GEOMETRY_RATIO = 1.2
MIN_PEERS = 3  # a group needs this many series before anything is called an outlier

CT_MEASURES = ("air", "tissue", "noise")
OTHER_MEASURES = ("p50", "noise", "pixels", "pixel_spacing")


@dataclass(frozen=True)
class Outlier:
    """One series off its model's norm on one measure."""

    label: str
    machine: str
    model: str
    measure: str
    value: float
    median: float
    z: float
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def robust_z(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust z-scores of `values` and their median. With no spread at all, a value equal to the
    median scores 0 and any other scores infinity."""
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med))) * 1.4826
    if mad == 0:
        return np.where(values == med, 0.0, np.copysign(np.inf, values - med)), med
    return (values - med) / mad, med


def _value(s: SeriesStats, measure: str) -> float | None:
    if measure == "pixels":
        return float(s.rows * s.columns) if s.rows and s.columns else None
    value = getattr(s, measure)
    return None if value is None else float(value)


def _ratio_off(value: float, median: float, limit: float) -> float | None:
    """value / median when it is at least `limit` times off either way, else None."""
    if median <= 0 or value <= 0:
        return None
    ratio = value / median
    return ratio if ratio >= limit or ratio <= 1 / limit else None


def _ct_reason(measure: str, value: float, median: float, _group: list[SeriesStats]
               ) -> str | None:
    if measure == "noise":
        ratio = _ratio_off(value, median, NOISE_RATIO)
        if ratio is None:
            return None
        return f"noise {ratio:.1f}\u00d7 the model's median ({value:.1f} HU vs {median:.1f})"
    if abs(value - median) < MIN_SHIFT_HU:
        return None
    name = {"air": "air", "tissue": "soft tissue (water)"}[measure]
    return f"{name} at {value:.0f} HU, model median {median:.0f}"


def _other_reason(measure: str, value: float, median: float, group: list[SeriesStats]
                  ) -> str | None:
    if measure == "p50":
        ranges = [s.p95 - s.p5 for s in group if s.p95 is not None and s.p5 is not None]
        scale = max(abs(median), float(np.median(ranges)) if ranges else 0.0)
        if abs(value - median) < MIN_SHIFT_REL * scale:
            return None
        return (f"median intensity {value:.0f} inside the body, model median {median:.0f} "
                f"({(value - median) / scale:+.0%})" if scale else
                f"median intensity {value:.0f} inside the body, model median {median:.0f}")
    if measure == "noise":
        ratio = _ratio_off(value, median, NOISE_RATIO)
        if ratio is None:
            return None
        return f"noise {ratio:.1f}\u00d7 the model's median ({value:.1f} vs {median:.1f})"
    ratio = _ratio_off(value, median, GEOMETRY_RATIO)
    if ratio is None:
        return None
    if measure == "pixels":
        return f"image of {value:.0f} pixels, {ratio:.2f}\u00d7 the model's median ({median:.0f})"
    return f"pixel spacing {value:.3g} mm, model median {median:.3g} mm"


def find_outliers(series: list[SeriesStats]) -> list[Outlier]:
    """Outliers of each model and modality's series: CT on air, soft tissue and noise; other
    modalities on median intensity, noise, image size and pixel spacing."""
    groups: dict[tuple[str, str], list[SeriesStats]] = defaultdict(list)
    for s in series:
        groups[(s.model, s.modality)].append(s)
    found: list[Outlier] = []
    for (model, modality), group in sorted(groups.items()):
        ct = modality == "CT"
        reason_of: Callable = _ct_reason if ct else _other_reason
        for measure in CT_MEASURES if ct else OTHER_MEASURES:
            have = [(s, v) for s in group if (v := _value(s, measure)) is not None]
            if len(have) < MIN_PEERS:
                continue
            values = np.array([v for _, v in have], dtype=float)
            zs, med = robust_z(values)
            for (s, v), z in zip(have, zs, strict=True):
                if abs(z) <= Z_LIMIT:
                    continue
                reason = reason_of(measure, v, med, group)
                if reason:
                    found.append(Outlier(s.label, s.machine, model, measure, v, med,
                                         round(float(z), 1), reason))
    return found
