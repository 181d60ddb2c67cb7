"""Intensity clustering (scikit-learn K-means with a silhouette score): of one slice's pixels, and
of the fleet's series statistics. Imported only when called: scikit-learn is the `qc` extra."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.qc.stats import SeriesStats

FEATURES = ("air", "tissue", "noise", "mean", "std")
SAMPLE = 3000  # points of the fleet the silhouette is computed on
SLICE_SAMPLE = 1000  # pixels of a slice clustered (the silhouette's cost grows as its square)
SLICE_KS = (2, 3, 4)


@dataclass(frozen=True)
class Clusters:
    """K-means result: `k`, the cluster of each point, the centers (for a slice: intensities,
    ascending) and the silhouette score (-1..1; near 1: well separated)."""

    k: int
    labels: tuple[int, ...]
    centers: tuple[float, ...]
    silhouette: float


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    # One thread: a few thousand points gain nothing from OpenMP, whose threads spin-wait for
    # each other; on a busy 2-core machine that made a slice cost 3 s instead of 0.13 s.
    with threadpool_limits(1):
        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
        n = min(len(x), SAMPLE)
        score = float(silhouette_score(x, model.labels_, sample_size=n, random_state=seed))
    return model.labels_, model.cluster_centers_, score


def slice_clusters(values: np.ndarray, k: int = 3, seed: int = 0) -> Clusters:
    """K-means of a slice's intensities (e.g. HU) into `k` classes (air, soft tissue, bone),
    fitted on at most SLICE_SAMPLE pixels; labels are of those pixels, centers ascending."""
    flat = values.astype(np.float64).ravel()
    flat = flat[np.isfinite(flat)]
    rng = np.random.default_rng(seed)
    pick = flat if flat.size <= SLICE_SAMPLE else rng.choice(flat, SLICE_SAMPLE, replace=False)
    if np.unique(pick).size < k:
        raise ValueError(f"a slice with fewer than {k} distinct values cannot form {k} clusters")
    labels, centers, score = _kmeans(pick.reshape(-1, 1), k, seed)
    order = np.argsort(centers[:, 0])
    rank = np.empty_like(order)
    rank[order] = np.arange(k)
    return Clusters(k, tuple(int(rank[i]) for i in labels),
                    tuple(round(float(centers[i, 0]), 1) for i in order), round(score, 3))


def best_slice_clusters(values: np.ndarray, seed: int = 0) -> Clusters | None:
    """slice_clusters with the k of SLICE_KS that has the best silhouette score; None when the
    slice has too few distinct values for any."""
    best: Clusters | None = None
    for k in SLICE_KS:
        try:
            found = slice_clusters(values, k, seed)
        except ValueError:
            break
        if best is None or found.silhouette > best.silhouette:
            best = found
    return best


def fleet_clusters(series: Sequence[SeriesStats], k_max: int = 6, seed: int = 0) -> Clusters | None:
    """K-means of the CT series' standardized statistics (FEATURES), `k` chosen from 2..k_max by
    the best silhouette; labels follow the order of the CT series given. None when there are
    fewer than 4 CT series with every feature."""
    rows = [s for s in series if s.modality == "CT"
            and all(getattr(s, f) is not None for f in FEATURES)]
    if len(rows) < 4:
        return None
    x = np.array([[getattr(s, f) for f in FEATURES] for s in rows], dtype=float)
    spread = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    best: Clusters | None = None
    for k in range(2, min(k_max, len(rows) - 1) + 1):
        if np.unique(x, axis=0).shape[0] < k:
            break
        labels, _, score = _kmeans(x, k, seed)
        if best is None or score > best.silhouette:
            best = Clusters(k, tuple(int(v) for v in labels), (), round(score, 3))
    return best
