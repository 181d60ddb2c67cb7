"""Outliers among series of one machine model, by robust z-scores, each with its reason in words.

Series are compared within one model and modality; series of no known model ("unknown model":
no Manufacturer or Model Name) only within one machine (told by its serial number or station
name), since a group of different machines says nothing about any one's drift. A series is an
outlier on a measure when its robust z-score (distance from the group's median in units of
1.4826 x the median absolute deviation) exceeds Z_LIMIT *and* the difference matters in
practice: a fleet of near-identical scanners has a tiny spread, and a 3 HU difference is not a
fault however many MADs it is. When over half the group holds the very same value there is no
spread, any other value is off, and the outlier's evidence says so in words.

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

from gateway.qc.stats import UNKNOWN_MODEL, SeriesStats

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
    """One series off its group's norm on one measure. `model` names the group (a model, or for
    series of unknown model their machine); `z` is None when the group has no spread, and
    `evidence` says why the value is off in numbers or words."""

    label: str
    machine: str
    model: str
    measure: str
    value: float
    median: float
    z: float | None
    reason: str
    evidence: str

    def as_dict(self) -> dict:
        return asdict(self)


def _as_words(measure: str, value: float) -> str:
    """A measure's value as a phrase ("65536 pixels", "pixel spacing 0.2 mm")."""
    return {"air": f"air at {value:.0f} HU", "tissue": f"soft tissue at {value:.0f} HU",
            "noise": f"noise {value:.1f}", "p50": f"median intensity {value:.0f}",
            "pixels": f"{value:.0f} pixels", "pixel_spacing": f"pixel spacing {value:.3g} mm",
            }.get(measure, f"{measure} {value:g}")


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


def _ct_reason(measure: str, value: float, median: float, _group: list[SeriesStats],
               peers: str = "model") -> str | None:
    if measure == "noise":
        ratio = _ratio_off(value, median, NOISE_RATIO)
        if ratio is None:
            return None
        return f"noise {ratio:.1f}\u00d7 the {peers}'s median ({value:.1f} HU vs {median:.1f})"
    if abs(value - median) < MIN_SHIFT_HU:
        return None
    name = {"air": "air", "tissue": "soft tissue (water)"}[measure]
    return f"{name} at {value:.0f} HU, {peers} median {median:.0f}"


def _other_reason(measure: str, value: float, median: float, group: list[SeriesStats],
                  peers: str = "model") -> str | None:
    if measure == "p50":
        ranges = [s.p95 - s.p5 for s in group if s.p95 is not None and s.p5 is not None]
        scale = max(abs(median), float(np.median(ranges)) if ranges else 0.0)
        if abs(value - median) < MIN_SHIFT_REL * scale:
            return None
        text = f"median intensity {value:.0f} inside the body, {peers} median {median:.0f}"
        return f"{text} ({(value - median) / scale:+.0%})" if scale else text
    if measure == "noise":
        ratio = _ratio_off(value, median, NOISE_RATIO)
        if ratio is None:
            return None
        return f"noise {ratio:.1f}\u00d7 the {peers}'s median ({value:.1f} vs {median:.1f})"
    ratio = _ratio_off(value, median, GEOMETRY_RATIO)
    if ratio is None:
        return None
    if measure == "pixels":
        return f"image of {value:.0f} pixels, {ratio:.2f}\u00d7 the {peers}'s median ({median:.0f})"
    return f"pixel spacing {value:.3g} mm, {peers} median {median:.3g} mm"


def _group_of(s: SeriesStats) -> tuple[str, str] | None:
    """(group, "model" or "machine"): the series' model; for a series of unknown model its
    machine if something names it, else None (not compared with anything)."""
    if s.model != UNKNOWN_MODEL:
        return s.model, "model"
    return (s.machine, "machine") if s.machine != UNKNOWN_MODEL else None


def _evidence(z: float, measure: str, values: np.ndarray, med: float, peers: str) -> str:
    if np.isfinite(z):
        return f"robust z {z:.1f}"
    same = int(np.count_nonzero(values == med))
    return (f"{same} of the {peers}'s {len(values)} series have {_as_words(measure, med)} "
            "exactly: no spread")


def find_outliers(series: list[SeriesStats]) -> list[Outlier]:
    """Outliers of each model and modality's series (of each machine's, for series of unknown
    model): CT on air, soft tissue and noise; other modalities on median intensity, noise, image
    size and pixel spacing."""
    groups: dict[tuple[str, str, str], list[SeriesStats]] = defaultdict(list)
    for s in series:
        group = _group_of(s)
        if group is not None:
            groups[(group[0], s.modality, group[1])].append(s)
    found: list[Outlier] = []
    for (model, modality, peers), group in sorted(groups.items()):
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
                reason = reason_of(measure, v, med, group, peers)
                if reason:
                    found.append(Outlier(
                        s.label, s.machine, model, measure, v, med,
                        round(float(z), 1) if np.isfinite(z) else None, reason,
                        _evidence(float(z), measure, values, med, peers)))
    return found
