"""QC plots with matplotlib (Agg, no display): per-machine distributions and the outlier scatter
of CT, per-machine series of other modalities, as PNG files or data: URIs."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from gateway.qc.fleet import QCResult


def _figures(qc: QCResult) -> list[tuple[str, object]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    ct = [s for s in qc.series if s.modality == "CT" and s.noise is not None]
    flagged = {o.label for o in qc.outliers}
    figs: list[tuple[str, object]] = []
    machines = sorted({s.machine for s in ct})
    if machines:
        fig = Figure(figsize=(8, 3.2), dpi=90)
        for ax, measure in zip(fig.subplots(1, 3), ("air", "tissue", "noise"), strict=True):
            data = [[getattr(s, measure) for s in ct if s.machine == m
                     and getattr(s, measure) is not None] for m in machines]
            ax.boxplot([d or [float("nan")] for d in data], orientation="horizontal")
            ax.set_yticks(range(1, len(machines) + 1), machines if measure == "air" else [""]
                          * len(machines), fontsize=7)
            ax.set_title(f"{measure} (HU)", fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        figs.append(("per-machine distributions (CT series)", fig))
        fig = Figure(figsize=(5, 3.5), dpi=90)
        ax = fig.subplots()
        for group, colour, name in ((False, "#2e7d32", "within the fleet"),
                                    (True, "#c0392b", "outlier")):
            pts = [s for s in ct if (s.label in flagged) == group and s.air is not None]
            ax.scatter([s.air for s in pts], [s.noise for s in pts], c=colour, label=name, s=18)
        ax.set_xlabel("air (HU)")
        ax.set_ylabel("noise (HU)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs.append(("outliers: air against noise per series", fig))
    other = [s for s in qc.series if s.modality != "CT" and s.p50 is not None]
    machines = sorted({s.machine for s in other})
    if machines:
        fig = Figure(figsize=(8, 1.2 + 0.3 * len(machines)), dpi=90)
        for ax, measure, title in zip(fig.subplots(1, 2), ("p50", "noise"),
                                      ("median intensity in the body", "noise"), strict=True):
            for row, m in enumerate(machines, start=1):
                pts = [s for s in other if s.machine == m and getattr(s, measure) is not None]
                ax.scatter([getattr(s, measure) for s in pts], [row] * len(pts), s=18,
                           c=["#c0392b" if s.label in flagged else "#2e7d32" for s in pts])
            ax.set_yticks(range(1, len(machines) + 1),
                          machines if measure == "p50" else [""] * len(machines), fontsize=7)
            ax.set_title(title, fontsize=9)
            ax.tick_params(axis="x", labelsize=7)
        fig.tight_layout()
        figs.append(("per-machine series, other modalities (red: an outlier)", fig))
    return figs


def _png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # type: ignore[attr-defined]
    return buf.getvalue()


def plot_uris(qc: QCResult) -> list[tuple[str, str]]:
    """(caption, data: URI) of each plot."""
    return [(name, "data:image/png;base64," + base64.b64encode(_png(fig)).decode("ascii"))
            for name, fig in _figures(qc)]


def write_plots(qc: QCResult, folder: str | os.PathLike) -> list[Path]:
    """Write each plot as a PNG file in `folder`; return the files."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (_, fig) in enumerate(_figures(qc), start=1):
        path = out / f"qc-plot-{i}.png"
        path.write_bytes(_png(fig))
        files.append(path)
    return files
