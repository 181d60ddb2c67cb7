"""The audit: how much identifying content each object holds for the configuration in force,
and the same rolled up per series, study, patient and session.

An instance's `RiskReport` lists what the loaded configuration will change (profile actions,
`phi_tags` overrides, pseudonyms), each finding weighted by `risk.weights`; its score is the sum,
at most 100. A group is as risky as its riskiest instance. A file that cannot be read gets no
score: it is `UNREADABLE`, never "risk 0 LOW". Reports carry element paths, VRs, actions, file
paths and keyed labels, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.config import Config
from gateway.deid import keyed
from gateway.deid.inspect import Finding, band, inspect
from gateway.deid.profile import Profile
from gateway.deid.values import stored_text
from gateway.dicomio import DicomReadError, read_header
from gateway.safetext import safe_message

LEVELS = ("session", "patient", "study", "series", "instance")
UNREADABLE = "UNREADABLE"
PATIENT_ID, STUDY_UID, SERIES_UID = 0x00100020, 0x0020000D, 0x0020000E

__all__ = ["LEVELS", "UNREADABLE", "Auditor", "Finding", "RiskReport", "aggregate", "audit_paths"]


@dataclass(frozen=True)
class RiskReport:
    """The risk of one instance, or of a series, study, patient or session (`level`).

    `score` is 0-100 (None for an unreadable instance: `problem` says why); a group's is its
    riskiest instance's. `findings` are an instance's; `children` a group's reports."""

    level: str
    label: str
    score: int | None
    findings: tuple[Finding, ...] = ()
    problem: str = ""
    children: tuple[RiskReport, ...] = ()
    instances: int = 1
    unreadable: int = 0

    @property
    def band(self) -> str:
        """LOW / MEDIUM / HIGH / CRITICAL, or UNREADABLE for a file that could not be read."""
        return UNREADABLE if self.score is None else band(self.score)

    def walk(self, level: str | None = None) -> list[RiskReport]:
        """This report and every report under it (only those of `level`, if given)."""
        found = [self] if level in (None, self.level) else []
        for child in self.children:
            found += child.walk(level)
        return found

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level, "label": self.label, "score": self.score,
                               "band": self.band}
        if self.level == "instance":
            if self.problem:
                out["problem"] = self.problem
            out["findings"] = [{"path": f.path, "vr": f.vr, "action": f.action,
                                "weight": f.weight} for f in self.findings]
        else:
            out["instances"], out["unreadable"] = self.instances, self.unreadable
            out["children"] = [c.as_dict() for c in self.children]
        return out


@dataclass(frozen=True)
class Placement:
    """Where an instance belongs: labels of its patient, study and series (no identifier)."""

    patient: str
    study: str
    series: str


@dataclass
class Auditor:
    """Assesses objects under one configuration and one of its profiles. With the site key,
    `placement` labels patients, studies and series as the de-identified output names them
    (pseudonym, new UIDs); without it, by order of appearance."""

    config: Config
    profile_name: str = "default"
    key: bytes | None = None
    _ordinals: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.profile = Profile.from_config(self.config.profile_named(self.profile_name))

    def assess(self, ds: Dataset, label: str = "") -> RiskReport:
        """The report for one dataset (its header is enough)."""
        report = inspect(ds, self.profile, self.config.risk.weights)
        return RiskReport("instance", label, report.score, report.findings)

    def assess_file(self, path: Path) -> tuple[RiskReport, Placement | None]:
        """The report for one file and where it belongs; an unreadable file is UNREADABLE."""
        try:
            ds = read_header(path)
            return self.assess(ds, str(path)), self.placement(ds)
        except DicomReadError as exc:
            problem = exc.problem
        except Exception as exc:  # elements are decoded lazily: a bad VR surfaces here
            problem = f"cannot parse: {safe_message(exc)}"
        return RiskReport("instance", str(path), None, problem=problem, unreadable=1), None

    def placement(self, ds: Dataset) -> Placement:
        patient = stored_text(ds, PATIENT_ID).strip()
        study = stored_text(ds, STUDY_UID).strip()
        series = stored_text(ds, SERIES_UID).strip()
        return Placement(self._label("patient", patient), self._label("study", study),
                         self._label("series", series))

    def _label(self, level: str, value: str) -> str:
        if not value:
            return f"(no {level} attribute)"
        if self.key is not None:
            if level == "patient":
                return keyed.pseudonym(self.key, value, self.profile.pseudonym_prefix)
            return keyed.new_uid(self.key, value)
        return self._ordinals.setdefault(
            (level, value), f"{level} {1 + sum(1 for lv, _ in self._ordinals if lv == level)}")


def aggregate(placed: Iterable[tuple[RiskReport, Placement | None]],
              label: str = "") -> RiskReport:
    """Roll instance reports up into series, studies, patients and one session report.
    Unreadable instances (no placement) hang directly under the session."""
    tree: dict[str, dict[str, dict[str, list[RiskReport]]]] = {}
    loose: list[RiskReport] = []
    for report, where in placed:
        if where is None:
            loose.append(report)
        else:
            tree.setdefault(where.patient, {}).setdefault(where.study, {}).setdefault(
                where.series, []).append(report)

    def group(level: str, name: str, children: list[RiskReport]) -> RiskReport:
        scores = [c.score for c in children if c.score is not None]
        score = max(scores) if scores else None if children else 0  # all unreadable: no score
        return RiskReport(level, name, score, children=tuple(children),
                          instances=sum(c.instances for c in children),
                          unreadable=sum(c.unreadable for c in children))

    patients = [group("patient", p, [group("study", st, [group("series", se, reports)
                                                         for se, reports in series.items()])
                                     for st, series in studies.items()])
                for p, studies in tree.items()]
    return group("session", label, patients + loose)


def audit_paths(paths: Iterable[str | Path], config: Config, key: bytes | None = None,
                profile: str = "default", label: str = "") -> RiskReport:
    """The whole report over files (a folder's, a session's instances): each file assessed
    under `config`, rolled up per series, study, patient and the whole."""
    auditor = Auditor(config, profile, key)
    return aggregate((auditor.assess_file(Path(p)) for p in paths), label)
