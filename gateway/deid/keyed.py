"""Keyed determinism: new UIDs, pseudonyms, hashes and date offsets from HMAC-SHA256(site key)."""

from __future__ import annotations

import hmac
from functools import lru_cache

from pydicom.datadict import DicomDictionary
from pydicom.uid import UID_dictionary

DICOM_ROOT = "1.2.840.10008."
# Roots of registries whose UIDs name things, not patients: DICOM, HL7 (coding schemes).
WELL_KNOWN_ROOTS = (DICOM_ROOT, "2.16.840.1.113883.")
_WELL_KNOWN = frozenset(UID_dictionary)
# Attributes whose UIDs name a class or an encoding, never an instance (SOP Class UID,
# Referenced SOP Class UID, Transfer Syntax UID, …): kept as they are, a vendor's private
# SOP class included, or the object would no longer say what it is.
CLASS_UID_TAGS = frozenset(
    tag for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items()
    if vr == "UI" and ("SOPClass" in keyword or "TransferSyntax" in keyword))


@lru_cache(maxsize=4096)  # a study's UIDs, its patient's pseudonym and offset recur per object
def _mac(key: bytes, domain: str, value: str) -> bytes:
    return hmac.digest(key, f"{domain}\x00{value}".encode(), "sha256")


def is_well_known_uid(uid: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes and anything under the DICOM root."""
    return uid in _WELL_KNOWN or uid.startswith(WELL_KNOWN_ROOTS)


def new_uid(key: bytes, uid: str) -> str:
    """`2.25.` + the decimal of HMAC-SHA256(key, uid) truncated to 128 bits (≤ 44 chars)."""
    return "2.25." + str(int.from_bytes(_mac(key, "uid", uid)[:16], "big"))


def keyed_hash(key: bytes, value: str, length: int = 16) -> str:
    """A short upper-case hex keyed hash of `value`, for pseudonyms and audit references."""
    return _mac(key, "hash", value).hex()[:length].upper()


def pseudonym(key: bytes, patient_id: str, prefix: str) -> str:
    """The same pseudonymous PatientID / PatientName for a patient in every study (≤ 64 chars)."""
    return (prefix + _mac(key, "patient", patient_id).hex()[:16].upper())[:64]


def date_offset_days(key: bytes, patient_id: str, bounds: tuple[int, int]) -> int:
    """A per-patient whole-day shift in [lo, hi], so intervals within a patient are kept."""
    lo, hi = bounds
    span = hi - lo + 1
    return lo + int.from_bytes(_mac(key, "date", patient_id)[:8], "big") % span
