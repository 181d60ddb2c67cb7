"""The inspector: what the profile will do to an object, weighted into a 0–100 risk score.

Besides the elements the profile acts on, it reports the kept values verify would refuse: one
invalid for its VR or VM ("invalid"), one holding an identifier of the object ("identifier").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from gateway.deid.dummies import TEXT, dummy_for
from gateway.deid.identifiers import ID_TAGS, IdentifierSet
from gateway.deid.keyed import CLASS_UID_TAGS, is_well_known_uid
from gateway.deid.profile import Profile
from gateway.deid.remediate import LONGITUDINAL_MODIFIED, PATIENT_ID, PATIENT_NAME, public_action
from gateway.deid.tags import tag_str
from gateway.deid.validity import element_problem
from gateway.deid.values import text_values
from gateway.deid.vr import STRING_VRS

BANDS = ((75, "CRITICAL"), (50, "HIGH"), (25, "MEDIUM"), (0, "LOW"))
BURNED_IN = 0x00280301
IDENTITY_REMOVED = 0x00120062
REFUSAL_WEIGHT = 20  # a kept value verify refuses


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
    if tag in (PATIENT_ID, PATIENT_NAME) or tag in ID_TAGS:
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


def _says_yes(ds: Dataset, tag: int) -> bool:
    elem = ds.get(tag)
    return elem is not None and str(elem.value).strip().upper() == "YES"


def _already_clean(elem: DataElement, action: str, profile: Profile, removed: bool,
                   shifted: bool) -> bool:
    """A value that is already what remediation writes: a well-known UID, or, in an object that
    declares its identity removed, a `2.25.` UID, a pseudonym or a dummy; or a date of an object
    whose dates say they were modified. (Many devices mint `2.25.` UIDs of their own: in an
    object that does not declare itself de-identified they are original identifiers.)"""
    text = str(elem.value)
    if elem.VR == "UI":
        return is_well_known_uid(text) or (removed and text.startswith("2.25."))
    if not removed:
        return False
    if elem.tag in (PATIENT_ID, PATIENT_NAME):
        return text.startswith(profile.pseudonym_prefix)
    if action == "D":
        return text in (TEXT, str(dummy_for(elem.VR)))
    return action == "C" and shifted and elem.VR in ("DA", "DT")


def _refusal(item: Dataset, tag: int, vr: str, matcher: IdentifierSet) -> str:
    """Why verify would refuse a value kept as it is ('' when it would not)."""
    if element_problem(item, tag) is not None:
        return "invalid"
    if vr != "UI" and any(matcher.found_in(v) for v in text_values(item, tag)):
        return "identifier"
    return ""


def inspect(ds: Dataset, profile: Profile) -> Report:
    """Findings (element path, VR, action, weight) and a risk score for `ds`."""
    findings: list[Finding] = []
    matcher = IdentifierSet.from_dataset(ds, profile)
    sop_class = str(ds.get("SOPClassUID", "") or "")
    removed = _says_yes(ds, IDENTITY_REMOVED)
    modified = ds.get(LONGITUDINAL_MODIFIED)
    shifted = removed and modified is not None and str(modified.value) == "MODIFIED"

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
                action = public_action(profile, tag, vr, sop_class) or (
                    "U" if vr == "UI" and tag not in CLASS_UID_TAGS else "")
            if vr == "SQ":
                if action == "X" or action == "Z":
                    findings.append(Finding(where, vr, action, 5))
                    continue
                for i, sub in enumerate(elem.value or ()):
                    walk(sub, f"{where}[{i}].")
                continue
            if (not action or action == "K") and vr in STRING_VRS and not empty:
                refusal = _refusal(item, tag, vr, matcher)
                if refusal:
                    findings.append(Finding(where, vr, refusal, REFUSAL_WEIGHT))
                continue
            if not action or action == "K" or empty or _already_clean(
                    elem, action, profile, removed, shifted):
                continue
            findings.append(Finding(where, vr, action, _weight(tag, vr, action)))

    walk(ds, "")
    score = sum(f.weight for f in findings)
    if _says_yes(ds, BURNED_IN):
        score += 50
        findings.append(Finding(tag_str(BURNED_IN), "CS", "pixels", 50))
    return Report(tuple(findings), min(100, score))


def folder_score(reports: Iterable[Report]) -> int:
    """A folder is as risky as its riskiest object."""
    return max((r.score for r in reports), default=0)
