"""Image analytics over a fleet of modalities: Hounsfield units, windows, per-series and
per-machine statistics, outliers with reasons; plots and the HTML report load their heavy
libraries (matplotlib, scikit-learn, Jinja2: the `gantry[qc]` extra) only when called."""

from gateway.qc.fleet import QCResult, fleet_qc
from gateway.qc.outliers import Outlier
from gateway.qc.stats import SeriesStats

__all__ = ["Outlier", "QCResult", "SeriesStats", "fleet_qc"]
