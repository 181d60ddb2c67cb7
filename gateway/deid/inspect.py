"""The inspector: what the profile will do to an object, weighted into a 0–100 risk score."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from gateway.deid.profile import Profile
from gateway.deid.remediate import IDENTIFYING_TAGS, PATIENT_ID, PATIENT_NAME
from gateway.deid.tags import tag_str

BANDS = ((75, "CRITICAL"), (50, "HIGH"), (25, "MEDIUM"), (0, "LOW"))
BURNED_IN = 0x00280301


@dataclass(frozen=True)
class Finding:
    """One element the profile acts on. Carries no value."""

    path: str
    vr: str
    action: str
    weight: int


@dataclass(frozen=True)
class Report:
    """The findings for one object and its risk score."""

    findings: tuple[Finding, ...]
    score: int

    @property
    def band(self) -> str:
        return band(self.score)


def band(score: int) -> str:
    """LOW / MEDIUM / HIGH / CRITICAL for a 0–100 score."""
    return next(name for floor, name in BANDS if score >= floor)


def _weight(tag: BaseTag, vr: str, action: str) -> int:
    if tag in (PATIENT_ID, PATIENT_NAME) or tag in IDENTIFYING_TAGS:
        return 20
    if vr == "PN":
        return 10
    if tag.is_private:
        return 3
    if vr in ("DA", "DT"):
        return 3
    if vr == "UI":
        return 1
    if vr in ("LO", "LT", "ST", "UT", "SH", "UC"):
        return 4
    return 2


def inspect(ds: Dataset, profile: Profile) -> Report:
    """Findings (element path, VR, action, weight) and a risk score for `ds`."""
    findings: list[Finding] = []

    def walk(item: Dataset, path: str) -> None:
        for elem in item:
            tag = BaseTag(elem.tag)
            if tag.element == 0 or tag.group == 0x0002:
                continue
            where = f"{path}{tag_str(tag)}"
            vr = elem.VR
            empty = elem.value is None or elem.value == "" or elem.value == []
            if tag.is_private:
                if 0x10 <= tag.element <= 0xFF:
                    continue
                creator = item.get((tag.group << 16) | (tag.element >> 8))
                kept = profile.is_safe_private(
                    tag.group, str(creator.value) if creator is not None else None, tag.element)
                action = "K" if kept else "X"
            else:
                action = profile.code_for(tag) or ("U" if vr == "UI" else "")
            if vr == "SQ":
                if action == "X" or action == "Z":
                    findings.append(Finding(where, vr, action, 5))
                    continue
                for i, sub in enumerate(elem.value or ()):
                    walk(sub, f"{where}[{i}].")
                continue
            if not action or action == "K" or empty:
                continue
            findings.append(Finding(where, vr, action, _weight(tag, vr, action)))

    walk(ds, "")
    score = sum(f.weight for f in findings)
    if str(ds.get(BURNED_IN, "") and ds[BURNED_IN].value).upper() == "YES":
        score += 50
        findings.append(Finding(tag_str(BURNED_IN), "CS", "pixels", 50))
    return Report(tuple(findings), min(100, score))


def folder_score(reports: Iterable[Report]) -> int:
    """A folder is as risky as its riskiest object."""
    return max((r.score for r in reports), default=0)
