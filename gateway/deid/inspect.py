"""The inspector: what the profile will do to an object, weighted into a 0–100 risk score.

Besides the elements the profile acts on, it reports the kept values verify would refuse: one
invalid for its VR or VM ("invalid"), one holding an identifier of the object ("identifier"),
weighed as identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from gateway.config import RISK_WEIGHTS
from gateway.deid.dummies import TEXT, dummy_for
from gateway.deid.identifiers import ID_TAGS, IdentifierSet
from gateway.deid.keyed import CLASS_UID_TAGS, is_well_known_uid
from gateway.deid.profile import Profile
from gateway.deid.remediate import LONGITUDINAL_MODIFIED, PATIENT_ID, PATIENT_NAME, public_action
from gateway.deid.tags import tag_str
from gateway.deid.validity import element_problem
from gateway.deid.values import text_values
from gateway.deid.vr import BINARY_VRS, STRING_VRS, TEXT_VRS

BANDS = ((75, "CRITICAL"), (50, "HIGH"), (25, "MEDIUM"), (0, "LOW"))
BURNED_IN = 0x00280301
IDENTITY_REMOVED = 0x00120062


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


# Overrides (`phi_tags`) as the action they take; keep is no action.
OVERRIDE_ACTIONS = ("remove", "empty", "replace", "hash")
HASH_WIDTHS = (16, 64)  # a `hash` override writes 16 hex digits (64 for long text and names)


def kind(tag: BaseTag, vr: str) -> str:
    """What a finding is, for its weight."""
    if tag in (PATIENT_ID, PATIENT_NAME) or tag in ID_TAGS:
        return "identity"
    if vr == "PN":
        return "person_name"
    if tag.is_private:
        return "private"
    if vr in ("DA", "DT"):
        return "date"
    if vr == "UI":
        return "uid"
    if vr in ("LO", "LT", "ST", "UT", "SH", "UC"):
        return "text"
    return "other"


def _says_yes(ds: Dataset, tag: int) -> bool:
    elem = ds.get(tag)
    return elem is not None and str(elem.value).strip().upper() == "YES"


def _already_clean(elem: DataElement, action: str, profile: Profile, removed: bool,
                   shifted: bool) -> bool:
    """A value that is already what remediation writes: a well-known UID, or, in an object that
    declares its identity removed, a `2.25.` UID, a pseudonym, a dummy, an override's value or
    hash, or cleaned text; or a date of an object whose dates say they were modified. (Many
    devices mint `2.25.` UIDs of their own: in an object that does not declare itself
    de-identified they are original identifiers.)"""
    text = str(elem.value)
    if elem.VR == "UI" and action in ("U", "C", "D"):
        return is_well_known_uid(text) or (removed and text.startswith("2.25."))
    if action == "replace":
        override = profile.overrides.get(int(elem.tag))
        return override is not None and text == override.value
    if not removed:
        return False
    if action == "pseudonym":
        return text.startswith(profile.pseudonym_prefix)
    if action == "hash":
        return len(text) in HASH_WIDTHS and all(c in "0123456789ABCDEF" for c in text)
    if action == "D":
        return text in (TEXT, str(dummy_for(elem.VR)))
    if action == "C" and elem.VR in ("DA", "DT"):
        return shifted
    return action == "C"  # text of a de-identified object has been cleaned


def _acts(elem: DataElement, action: str, profile: Profile) -> bool:
    """Whether remediation changes this element at all under `action` (C leaves times, numbers
    and dates without Modified Dates as they are; curve and overlay bits are kept; no UID is
    replaced under Retain UIDs)."""
    if elem.VR == "UI" and action in ("U", "C", "D"):
        return not profile.retain_uids
    if action != "C" or elem.VR == "SQ":
        return True
    if elem.VR in ("DA", "DT"):
        return profile.modified_dates
    if elem.VR in BINARY_VRS:
        return not 0x5000 <= elem.tag >> 16 <= 0x60FF
    return elem.VR in TEXT_VRS


def _refusal(item: Dataset, tag: int, vr: str, matcher: IdentifierSet) -> str:
    """Why verify would refuse a value kept as it is ('' when it would not)."""
    if element_problem(item, tag) is not None:
        return "invalid"
    if vr != "UI" and any(matcher.found_in(v) for v in text_values(item, tag)):
        return "identifier"
    return ""


def inspect(ds: Dataset, profile: Profile, weights: dict[str, int] | None = None) -> Report:
    """Findings (element path, VR, action, weight) and a risk score for `ds`: every element the
    profile, its `phi_tags` overrides and its pseudonyms will change."""
    weights = {**RISK_WEIGHTS, **(weights or {})}
    findings: list[Finding] = []
    matcher = IdentifierSet.from_dataset(ds, profile)
    removed = _says_yes(ds, IDENTITY_REMOVED)
    modified = ds.get(LONGITUDINAL_MODIFIED)
    shifted = removed and modified is not None and str(modified.value) == "MODIFIED"
    sop_class = str(ds.get("SOPClassUID", "") or "")

    def walk(item: Dataset, path: str) -> None:
        for elem in item:
            tag = BaseTag(elem.tag)
            if tag.element == 0 or tag.group == 0x0002:
                continue
            where = f"{path}{tag_str(tag)}"
            vr = elem.VR
            empty = elem.value is None or elem.value == "" or elem.value == []
            override = profile.overrides.get(int(tag))
            if tag.is_private and 0x10 <= tag.element <= 0xFF:
                continue
            if override is not None:
                action = ("C" if override.action == "clean" else
                          override.action if override.action in OVERRIDE_ACTIONS else "K")
            elif tag.is_private:
                creator = item.get((tag.group << 16) | (tag.element >> 8))
                kept = profile.is_safe_private(
                    tag.group, str(creator.value) if creator is not None else None, tag.element)
                action = "K" if kept else "X"
            elif tag in (PATIENT_ID, PATIENT_NAME):
                action = "pseudonym"
            else:
                action = public_action(profile, tag, vr, sop_class) or (
                    "U" if vr == "UI" and tag not in CLASS_UID_TAGS else
                    "C" if vr in ("DA", "DT") and profile.modified_dates else "")
            if vr == "SQ" and action not in ("remove", "empty", "replace", "hash"):
                if action in ("X", "Z"):
                    if action == "X" or not empty:
                        findings.append(Finding(where, vr, action, weights["sequence"]))
                    continue
                for i, sub in enumerate(elem.value or ()):
                    walk(sub, f"{path}{tag_str(tag)}[{i}].")
                continue
            if (not action or action == "K") and vr in STRING_VRS and not empty:
                refusal = _refusal(item, tag, vr, matcher)
                if refusal:
                    findings.append(Finding(where, vr, refusal, weights["identity"]))
                continue
            if (not action or action == "K" or empty
                    or not _acts(elem, action, profile)
                    or _already_clean(elem, action, profile, removed, shifted)):
                continue
            findings.append(Finding(where, vr, action, weights[kind(tag, vr)]))

    walk(ds, "")
    score = sum(f.weight for f in findings)
    if _says_yes(ds, BURNED_IN):
        score += weights["burned_in"]
        findings.append(Finding(tag_str(BURNED_IN), "CS", "pixels", weights["burned_in"]))
    return Report(tuple(findings), min(100, score))
