"""Outliers among series of one machine model, by robust z-scores, each with its reason in words.

A series is an outlier on a measure when its robust z-score (distance from the model's median in
units of 1.4826 x the median absolute deviation) exceeds Z_LIMIT *and* the difference matters in
practice (MIN_SHIFT_HU for air and soft tissue, NOISE_RATIO for noise): a fleet of near-identical
scanners has a tiny spread, and a 3 HU difference is not a fault however many MADs it is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np

from gateway.qc.stats import SeriesStats

Z_LIMIT = 3.5
MIN_SHIFT_HU = 40.0
NOISE_RATIO = 1.5
MIN_PEERS = 3  # a model needs this many series before anything is called an outlier


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


def _reason(measure: str, value: float, median: float) -> str | None:
    if measure == "noise":
        if median <= 0:
            return None
        ratio = value / median
        if ratio >= NOISE_RATIO or ratio <= 1 / NOISE_RATIO:
            return f"noise {ratio:.1f}\u00d7 the model's median ({value:.1f} HU vs {median:.1f})"
        return None
    if abs(value - median) < MIN_SHIFT_HU:
        return None
    name = {"air": "air", "tissue": "soft tissue (water)"}[measure]
    return f"{name} at {value:.0f} HU, model median {median:.0f}"


def find_outliers(series: list[SeriesStats]) -> list[Outlier]:
    """Outliers of CT series per machine model on air, soft tissue and noise."""
    by_model: dict[str, list[SeriesStats]] = defaultdict(list)
    for s in series:
        if s.modality == "CT":
            by_model[s.model].append(s)
    found: list[Outlier] = []
    for model, group in sorted(by_model.items()):
        for measure in ("air", "tissue", "noise"):
            have = [s for s in group if getattr(s, measure) is not None]
            if len(have) < MIN_PEERS:
                continue
            values = np.array([getattr(s, measure) for s in have], dtype=float)
            zs, med = robust_z(values)
            for s, v, z in zip(have, values, zs, strict=True):
                reason = _reason(measure, float(v), med)
                if reason and abs(z) > Z_LIMIT:
                    found.append(Outlier(s.label, s.machine, model, measure, float(v), med,
                                         round(float(z), 1), reason))
    return found
