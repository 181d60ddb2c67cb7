"""The identifying tokens of one object, and where they occur in a piece of text.

An identifier is compared as a run of whole tokens (letters and digits; case and punctuation
ignored): `1CT1` is found in `CHEST 1CT1 X` but `PHILIP` is not found in `PHILIPS`. Runs of
tokens are compared joined, so `AB-123` also matches `ab 123` and `AB123`, and a date held as
20240312 matches 2024-03-12, 12/03/2024, 12.03.24 or 12 Mar 2024. Clean (C), verify, the audit
and the OCR stage all ask the same `IdentifierSet`, so they agree on what identifies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator

from pydicom.dataset import Dataset

from gateway.deid.dummies import TEXT as DUMMY_TEXT
from gateway.deid.profile import Profile
from gateway.deid.values import element_vr, text_values

TOKEN = re.compile(r"[^\W_]+")
MIN_LENGTH = 2  # a token run this long (joined) or longer identifies; single characters do not
PATIENT_BIRTH_DATE = 0x00100030
# Attributes whose whole value identifies a patient or a visit (besides names and dates).
ID_TAGS = frozenset({
    0x00100020,  # PatientID
    0x00101000,  # OtherPatientIDs
    0x00080050,  # AccessionNumber
    0x00102154,  # PatientTelephoneNumbers
    0x00101090,  # MedicalRecordLocator
    0x00380010,  # AdmissionID
    0x00401001,  # RequestedProcedureID
    0x00400009,  # ScheduledProcedureStepID
    0x00400253,  # PerformedProcedureStepID
    0x00200010,  # StudyID
    0x00402016,  # PlacerOrderNumberImagingServiceRequest
    0x00402017,  # FillerOrderNumberImagingServiceRequest
    0x00101050,  # InsurancePlanIdentification
})
# Attributes whose value and comma-separated parts identify a place.
PLACE_TAGS = frozenset({
    0x00080080,  # InstitutionName
    0x00080081,  # InstitutionAddress
    0x00101040,  # PatientAddress
    0x00380400,  # PatientInstitutionResidence
})
# Name words too common to identify on their own (the whole name still does).
PARTICLES = frozenset({"da", "de", "del", "der", "des", "di", "do", "dos", "du", "la", "le",
                       "van", "von", "den", "ter", "ten", "st", "y", "al", "el", "bin", "ibn"})
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")


def tokens(text: str) -> list[str]:
    """The tokens of `text`, case-folded."""
    return [m.group().casefold() for m in TOKEN.finditer(text)]


def date_forms(value: str) -> set[str]:
    """The ways people write the date of a DA (or the date part of a DT) value, as joined
    tokens: 20240312 → 20240312, 12032024, 03122024, 120324, 12mar2024, march122024 ..."""
    digits = "".join(c for c in value[:10] if c.isdigit())[:8]
    try:
        day = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return set()
    if len(digits) != 8:
        return set()
    y, yy = f"{day.year:04d}", f"{day.year % 100:02d}"
    forms: set[str] = set()
    for d in {f"{day.day:02d}", str(day.day)}:
        for m in {f"{day.month:02d}", str(day.month)}:
            forms.update((y + m + d, d + m + y, m + d + y, d + m + yy, m + d + yy))
        for mon in (MONTHS[day.month - 1], MONTHS[day.month - 1][:3]):
            forms.update((d + mon + y, mon + d + y, d + mon + yy, y + mon + d))
    return forms


def name_forms(value: str) -> set[str]:
    """A person name's identifying words: each word of its family, given and middle names, and
    each of those names whole (prefixes, suffixes and name particles alone do not identify)."""
    forms: set[str] = set()
    for group in value.split("="):  # alphabetic, ideographic, phonetic
        for component in group.split("^")[:3]:
            words = tokens(component)
            forms.update(w for w in words if w not in PARTICLES)
            forms.add("".join(words))
    return forms


def place_forms(value: str) -> set[str]:
    """An institution or address: the whole value and each part between commas, carets,
    semicolons or line breaks."""
    parts = re.split(r"[,^;\r\n]", value)
    return {"".join(tokens(p)) for p in [value, *parts]}


class IdentifierSet:
    """The identifying tokens of one object, collected from its ORIGINAL header."""

    def __init__(self, forms: Iterable[str] = ()) -> None:
        dummy = DUMMY_TEXT.casefold()
        self._forms = frozenset(f for f in forms if len(f) >= MIN_LENGTH and f != dummy)
        self._prefixes = frozenset(f[:i] for f in self._forms for i in range(1, len(f) + 1))

    @classmethod
    def from_dataset(cls, ds: Dataset, profile: Profile | None = None) -> IdentifierSet:
        """Names (every PN), IDs, dates and places of `ds` at every depth. With a `profile`,
        an element the profile keeps as it is (K, an override `keep`, or an unlisted non-PN
        element) is no identifier: its value may be exported by choice."""
        return cls(_collect(ds, profile))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of `text` holding an identifier, sorted, overlaps merged."""
        found: list[tuple[int, int]] = []
        for start, end in self._matches(text):
            if found and start <= found[-1][1]:
                found[-1] = (found[-1][0], max(end, found[-1][1]))
            else:
                found.append((start, end))
        return found

    def found_in(self, text: str) -> bool:
        """Whether `text` holds any identifier of the object."""
        return next(self._matches(text), None) is not None

    def scrub(self, text: str) -> str:
        """`text` with every identifier removed."""
        out, last = [], 0
        for start, end in self.spans(text):
            out.append(text[last:start])
            last = end
        out.append(text[last:])
        return "".join(out)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __len__(self) -> int:
        return len(self._forms)

    def _matches(self, text: str) -> Iterator[tuple[int, int]]:
        """Spans of token runs whose joined, case-folded text is an identifier, by start."""
        if not self._forms:
            return
        runs = [(m.start(), m.end(), m.group().casefold()) for m in TOKEN.finditer(text)]
        prefixes, forms = self._prefixes, self._forms
        for i, (start, _, word) in enumerate(runs):
            if word not in prefixes:
                continue
            joined, longest = "", None
            for _, end, nxt in runs[i:]:
                joined += nxt
                if joined not in prefixes:
                    break
                if joined in forms:
                    longest = end
            if longest is not None:
                yield start, longest


def _kept_by(profile: Profile, tag: int, vr: str, sop_class: str) -> bool:
    override = profile.overrides.get(tag)
    if override is not None:
        return override.action == "keep"
    code = profile.code_for(tag, sop_class)
    return code == "K" or (code is None and vr != "PN")


def _collect(ds: Dataset, profile: Profile | None) -> set[str]:
    forms: set[str] = set()
    sop_class = " ".join(text_values(ds, 0x00080016)) if 0x00080016 in ds._dict else ""

    def walk(item: Dataset) -> None:
        for key in list(item._dict):
            tag = int(key)
            group = tag >> 16
            if group & 1 or group == 0x0002 or not tag & 0xFFFF:
                continue
            vr = element_vr(item, key)
            if vr == "SQ":
                for sub in item[key].value or ():
                    walk(sub)
                continue
            if vr == "PN":
                kind = name_forms
            elif tag in ID_TAGS:
                kind = _whole
            elif tag in PLACE_TAGS:
                kind = place_forms
            elif vr in ("DA", "DT") or tag == PATIENT_BIRTH_DATE:
                kind = date_forms
            else:
                continue
            if profile is not None and _kept_by(profile, tag, vr, sop_class):
                continue
            for value in text_values(item, key):
                ranged = kind is date_forms and "-" in value  # a range A-B, or 2024-03-12
                for part in (value, *value.split("-")) if ranged else (value,):
                    forms.update(kind(part))

    walk(ds)
    return forms


def _whole(value: str) -> set[str]:
    return {"".join(tokens(value))}
