"""The remediator: applies a compiled Profile to a dataset, in place, at every depth.

Action codes (PS3.15 Table E.1-1a): X remove, Z empty, D dummy, K keep, C clean, U new UID.
Private elements are removed, or kept exactly as Table E.3.10-1 lists them under Retain Safe
Private (their creator blocks renumbered from 0x10). Unlisted public attributes are kept, except
UIDs, which are always remapped (unless Retain UIDs) so that no original UID survives anywhere.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from gateway.config import TagOverride
from gateway.deid import keyed
from gateway.deid.dates import DateFormatError, shift_da, shift_dt
from gateway.deid.dummies import dummy_for
from gateway.deid.identifiers import IdentifierSet
from gateway.deid.profile import Profile
from gateway.deid.values import as_stored, element_vr, stored_text, str_values, text_values
from gateway.deid.vr import BINARY_VRS, FREE_TEXT_VRS, STRING_VRS, TEXT_VRS

PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
ENCRYPTED_ATTRIBUTES = 0x04000500
LONGITUDINAL_MODIFIED = 0x00280303
MEDIA_STORAGE_SOP_INSTANCE, IMPLEMENTATION_CLASS, IMPLEMENTATION_VERSION = (0x00020003, 0x00020012,
                                                                            0x00020013)
# Text VRs whose new values may be stored as raw ASCII bytes.
RAW_TEXT_VRS = STRING_VRS | {"DS", "IS"}
GANTRY_IMPLEMENTATION_UID = "2.25.302521339738478452357281935462735718093"
GANTRY_IMPLEMENTATION_VERSION = "GANTRY_0_1"
# The file meta elements naming the implementation, as written (explicit VR little endian):
# immutable, shared by every object
_IMPLEMENTATION = tuple(
    RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True)
    for tag, vr, data in ((IMPLEMENTATION_CLASS, "UI", GANTRY_IMPLEMENTATION_UID.encode()),
                          (IMPLEMENTATION_VERSION, "SH", GANTRY_IMPLEMENTATION_VERSION.encode())))
assert all(not len(e.value) % 2 for e in _IMPLEMENTATION), "pad the value to even length"
ACTIONS_SEEN = 1 << 16  # public_action answers remembered per profile, at most


@dataclass
class Remediation:
    """What remediation did: originals for the backup, counts for the audit, maps for verify."""

    originals: Dataset | None = None  # when asked for: the elements as they were
    counts: Counter = field(default_factory=Counter)
    uid_map: dict[str, str] = field(default_factory=dict)
    # Original UIDs, and the identifying values (dates aside) the matcher came from.
    identifiers: set[str] = field(default_factory=set)
    matcher: IdentifierSet = field(default_factory=IdentifierSet)  # of the original header
    pseudonym: str = ""
    date_offset_days: int | None = None


def _set(ds: Dataset, key: int, vr: str, value: object) -> None:
    """Replace a public, non-sequence element's value without decoding the old one. ASCII text
    replacing a raw little-endian element is stored raw, in the object's own encoding, which
    the encoder copies as it is; anything else becomes a DataElement."""
    old = ds._dict[key]
    if isinstance(old, RawDataElement) and old.is_little_endian and vr in RAW_TEXT_VRS:
        text = "\\".join(value) if isinstance(value, list) else "" if value is None else value
        if isinstance(text, str) and text.isascii():
            data = text.encode("ascii")
            if len(data) % 2:
                data += b"\x00" if vr == "UI" else b" "
            ds._dict[key] = RawDataElement(key, old.VR if old.is_implicit_VR else vr, len(data),
                                           data, old.value_tell, old.is_implicit_VR, True)
            return
    if " or " in vr:  # an ambiguous VR ("US or SS"): pydicom resolves it when it decodes
        ds[key].value = value
    else:
        ds._dict[key] = DataElement(key, vr, value)


def public_action(profile: Profile, tag: int, vr: str, sop_class: str = "") -> str | None:
    """The action code for a public element: the profile's; for one the table does not list,
    X when its VR is unknown (UN: it may hold anything), Z when it is a person name, else None
    (kept, UIDs remapped, dates shifted). Remediation, verify and the audit all ask this."""
    seen = profile.actions_seen
    try:
        return seen[tag, vr, sop_class]
    except KeyError:
        pass
    code = profile.code_for(tag, sop_class)
    if code is None:
        if vr == "PN":
            code = "Z"
        elif vr == "UN":
            code = "X"
    if len(seen) < ACTIONS_SEEN:
        seen[int(tag), vr, sop_class] = code
    return code


class _Remediator:
    def __init__(self, ds: Dataset, profile: Profile, key: bytes, keep_originals: bool) -> None:
        self.profile = profile
        self.key = key
        self.keep_originals = keep_originals
        self.result = Remediation(Dataset() if keep_originals else None,
                                  matcher=IdentifierSet.from_dataset(ds, profile))
        patient = stored_text(ds, PATIENT_ID).strip()
        seed = patient or stored_text(ds, PATIENT_NAME) + "|" + stored_text(ds, 0x00100030)
        if seed == "|":
            seed = "study:" + stored_text(ds, 0x0020000D)
        self.result.pseudonym = keyed.pseudonym(key, seed, profile.pseudonym_prefix)
        self.days = (keyed.date_offset_days(key, seed, profile.date_shift_days)
                     if profile.modified_dates else 0)
        if profile.modified_dates:
            self.result.date_offset_days = self.days
        self.sop_class = stored_text(ds, 0x00080016)

    def scrub(self, text: str) -> str:
        """Clean (C) free text: remove every identifier of this object from it, as whole tokens
        (case and punctuation ignored), so words that merely contain one survive."""
        return self.result.matcher.scrub(text)

    # ------------------------------------------------------------------ values

    def map_uid(self, uid: str) -> str:
        uid = uid.strip().rstrip("\x00")
        if not uid or self.profile.retain_uids or keyed.is_well_known_uid(uid):
            return uid
        new = self.result.uid_map.get(uid)
        if new is None:
            new = self.result.uid_map[uid] = keyed.new_uid(self.key, uid)
        return new

    def _shift(self, ds: Dataset, key: int, vr: str, top: bool) -> bool:
        """Shift a DA/DT element by the patient's offset; unparseable values are emptied."""
        values = text_values(ds, key)
        if not values:
            return False
        self._record(ds, key, top)
        shifter = shift_da if vr == "DA" else shift_dt
        try:
            shifted = [shifter(v, self.days) for v in values]
        except DateFormatError:
            _set(ds, key, vr, empty_value_for_VR(vr))
            return True
        _set(ds, key, vr, shifted if len(shifted) > 1 else shifted[0])
        return True

    # ------------------------------------------------------------------ walk

    def walk(self, ds: Dataset, top: bool, clean: bool = False) -> bool:
        """Apply the profile to `ds`; True when anything in it changed. `clean`: inside a
        sequence the profile replaces (D) or cleans (C), unlisted text is cleaned too."""
        changed = False
        private_groups: dict[int, list[BaseTag]] = {}
        # The store's own key objects find elements by identity: a plain int would call BaseTag's
        # slow __eq__ on every hit. Profile tables are looked up with plain ints, likewise.
        for key in list(ds._dict):
            tag = int(key)
            group, element = tag >> 16, tag & 0xFFFF
            if element == 0 or group == 0x0002:  # group lengths; meta is handled apart
                if element == 0 and group != 0x0002:
                    self._record(ds, key, top)
                    del ds[key]
                continue
            if group & 1:
                private_groups.setdefault(group, []).append(key)
                continue
            if tag == ENCRYPTED_ATTRIBUTES and not top:
                continue
            if self._public(ds, key, tag, top, clean):
                changed = True
        for group, keys in private_groups.items():
            if self._private_group(ds, group, keys, top):
                changed = True
        return changed

    def _record(self, ds: Dataset, tag: int, top: bool) -> None:
        if top and self.keep_originals and tag not in self.result.originals._dict:
            raw = ds._dict[tag]
            if isinstance(raw, RawDataElement):  # the bytes as read: immutable, kept undecoded
                self.result.originals._dict[BaseTag(tag)] = raw
                return
            elem = ds[tag]  # values are replaced, never changed in place: only items need a copy
            self.result.originals.add(copy.deepcopy(elem) if elem.VR == "SQ"
                                      else DataElement(elem.tag, elem.VR, elem.value))

    def _count(self, code: str) -> None:
        self.result.counts[code] += 1

    def _public(self, ds: Dataset, key: int, tag: int, top: bool, clean: bool) -> bool:
        """One public element (`key` is the store's own tag object, `tag` the plain int).
        Elements left as they are are never decoded, nor are values that are replaced."""
        profile = self.profile
        override = profile.overrides.get(tag)
        if override is not None:
            return self._override(ds, ds[key], override, top)
        vr = element_vr(ds, key)
        if tag in (PATIENT_ID, PATIENT_NAME):
            self._record(ds, key, top)
            _set(ds, key, vr, self.result.pseudonym)
            self._count("D")
            return True
        code = public_action(profile, tag, vr, self.sop_class)
        if code is None or code == "K":
            if vr == "SQ":
                return self._sequence(ds, ds[key], top, clean)
            if code is None and clean and vr in FREE_TEXT_VRS:
                return self._clean(ds, key, top)
            if code is None and vr == "UI" and tag not in keyed.CLASS_UID_TAGS:
                return self._uid(ds, key, top)
            if code is None and vr in ("DA", "DT") and profile.modified_dates:
                return self._shift(ds, key, vr, top)
            return False
        if code == "X":
            if 0x6000 <= tag >> 16 <= 0x60FF and tag & 0xFFFF == 0x3000:
                return self._remove_group(ds, tag >> 16, top)
            self._record(ds, key, top)
            del ds[key]
            self._count("X")
            return True
        if code == "Z":
            self._record(ds, key, top)
            if vr == "SQ":
                ds[key].value = Sequence()
            else:
                _set(ds, key, vr, empty_value_for_VR(vr))
            self._count("Z")
            return True
        if code == "U" or (vr == "UI" and code in ("D", "C")):
            if vr == "SQ":
                return self._sequence(ds, ds[key], top, clean)
            return self._uid(ds, key, top)
        if code == "D":
            if vr == "SQ":
                return self._sequence(ds, ds[key], top, clean=True)
            self._record(ds, key, top)
            _set(ds, key, vr, dummy_for(vr))
            self._count("D")
            return True
        # C: clean
        return self._clean(ds, key, top)

    def _uid(self, ds: Dataset, key: int, top: bool) -> bool:
        values = text_values(ds, key)
        mapped = [self.map_uid(v) for v in values]
        if mapped == values:
            return False
        self._record(ds, key, top)
        _set(ds, key, "UI", mapped if len(mapped) > 1 else mapped[0])
        self._count("U")
        return True

    def _clean(self, ds: Dataset, key: int, top: bool) -> bool:
        """Clean (C) one element (`key` as in `_public`). Dates and times are read without
        decoding the element: shifted, or left as they are (a time identifies no one)."""
        vr = element_vr(ds, key)
        if vr in ("DA", "DT", "TM") and ds._dict[key].value and as_stored(ds, key):
            if vr != "TM" and self.profile.modified_dates and self._shift(ds, key, vr, top):
                self._count("C")
                return True
            return False
        elem = ds[key]
        vr = elem.VR
        if vr == "SQ":
            return self._sequence(ds, elem, top, clean=True)
        if vr in ("DA", "DT") and self.profile.modified_dates:
            if self._shift(ds, elem.tag, vr, top):
                self._count("C")
                return True
            return False
        if vr in BINARY_VRS:  # binary cannot be cleaned: empty it (fail closed) ...
            if not elem.value or 0x5000 <= elem.tag >> 16 <= 0x60FF:
                return False  # ... except curve and overlay bits, kept under Clean Graphics
            self._record(ds, elem.tag, top)
            elem.value = elem.empty_value
            self._count("C")
            return True
        if vr in TEXT_VRS and elem.value:
            cleaned = [self.scrub(v) for v in str_values(elem.value)]
            if cleaned != str_values(elem.value):
                self._record(ds, elem.tag, top)
                elem.value = cleaned if len(cleaned) > 1 else cleaned[0]
                self._count("C")
                return True
        return False

    def _sequence(self, ds: Dataset, elem: DataElement, top: bool, clean: bool = False) -> bool:
        if not elem.value:
            return False
        original = copy.deepcopy(elem) if (top and self.keep_originals) else None
        changed = False
        for item in elem.value:
            if self.walk(item, top=False, clean=clean):
                changed = True
        if changed and original is not None and elem.tag not in self.result.originals:
            self.result.originals.add(original)
        return changed

    def _override(self, ds: Dataset, elem: DataElement, override: TagOverride, top: bool) -> bool:
        action = override.action
        if action == "keep":
            return False
        if action == "clean":  # as the table's C: the object's identifiers scrubbed away
            return self._clean(ds, elem.tag, top)
        self._record(ds, elem.tag, top)
        if action == "remove":
            del ds[elem.tag]
        elif action == "empty":
            elem.value = Sequence() if elem.VR == "SQ" else elem.empty_value
        elif action == "replace":
            elem.value = override.value
        else:  # hash
            width = 64 if elem.VR in ("LO", "LT", "ST", "UT", "UC", "PN") else 16
            text = "|".join(str_values(elem.value))
            elem.value = keyed.keyed_hash(self.key, text, min(width, 64))
        self._count({"remove": "X", "empty": "Z", "replace": "D", "hash": "D"}[action])
        return True

    def _remove_group(self, ds: Dataset, group: int, top: bool) -> bool:
        """Overlay data removed: remove the whole overlay plane so the object stays valid."""
        tags = [t for t in ds.keys() if BaseTag(t).group == group]
        for t in tags:
            self._record(ds, t, top)
            del ds[t]
        self._count("X")
        return bool(tags)

    def _private_group(self, ds: Dataset, group: int, keys: list[BaseTag], top: bool) -> bool:
        """Keep only safe private elements; renumber the kept creator blocks from 0x10.
        `keys`: the group's keys in the element store."""
        tags = sorted(keys, key=int)
        creators = {t & 0xFF: "\\".join(text_values(ds, t)) for t in tags
                    if 0x0010 <= (t & 0xFFFF) <= 0x00FF and ds._dict[t].value is not None}
        kept: list[DataElement] = []
        remapped = False
        for t in tags:
            element = t & 0xFFFF
            if element < 0x1000:
                continue
            block = element >> 8
            creator = creators.get(block)
            override = self.profile.overrides.get(t)
            if override is not None and override.action == "keep":
                kept.append(ds[t])
            elif self.profile.is_safe_private(group, creator, element):
                _declare_vr(ds, t, self.profile.safe_private_vr(group, creator, element))
                # A kept UID is still a UID: remapped (and backed up) like any other.
                if ds[t].VR == "UI" and self._uid(ds, t, top):
                    remapped = True
                else:
                    self._count("C")
                kept.append(ds[t])
            else:
                self._count("X")
        keep_blocks = sorted({(e.tag & 0xFFFF) >> 8 for e in kept})
        renumber = {old: 0x10 + i for i, old in enumerate(keep_blocks)}
        unchanged = (len(kept) == sum(1 for t in tags if (t & 0xFFFF) >= 0x1000)
                     and len(creators) == len(keep_blocks)
                     and all(old == new for old, new in renumber.items())
                     and all(0x0010 <= (t & 0xFFFF) for t in tags))
        if unchanged:
            return remapped
        for t in tags:
            self._record(ds, t, top)
            del ds[t]
        for old, new in renumber.items():
            if old in creators:
                ds.add_new((group << 16) | new, "LO", creators[old])
        for elem in kept:
            element = elem.tag & 0xFFFF
            new_tag = (group << 16) | (renumber[element >> 8] << 8) | (element & 0xFF)
            ds.add(DataElement(new_tag, elem.VR, elem.value))
        return True


def _declare_vr(ds: Dataset, key: BaseTag, vr: str) -> None:
    """Give a kept private element of unknown VR (implicit VR that pydicom's dictionary does not
    know, or UN) the VR Table E.3.10-1 gives it, so that its value is read as what it is: a UID
    is remapped, text and sequence items are verified (as bytes they would pass unread)."""
    raw = ds._dict[key]
    if not vr or not isinstance(raw, RawDataElement) or raw.VR not in (None, "UN"):
        return
    if not raw.is_little_endian:
        return  # a big-endian UN's bytes: not ours to reinterpret
    # A sequence sent as UN is encoded in implicit VR little endian (PS3.5 6.2.2).
    ds._dict[key] = RawDataElement(raw.tag, vr, raw.length, raw.value, raw.value_tell,
                                   raw.is_implicit_VR or raw.VR == "UN", True)


def remediate_file_meta(ds: Dataset, state: _Remediator) -> None:
    """Map MediaStorageSOPInstanceUID; drop addresses and AE titles; name our implementation."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for key in list(meta._dict):
        if int(key) == MEDIA_STORAGE_SOP_INSTANCE:
            _set(meta, key, "UI", state.map_uid(stored_text(meta, key)))
        elif (key & 0xFFFF) >= 0x0016:
            del meta._dict[key]
    for elem in _IMPLEMENTATION:
        meta._dict[elem.tag] = elem


def remediate(ds: Dataset, profile: Profile, key: bytes, keep_originals: bool = True
              ) -> Remediation:
    """Apply `profile` to `ds` (and its file meta) in place; return what was done."""
    state = _Remediator(ds, profile, key, keep_originals)
    if ENCRYPTED_ATTRIBUTES in ds:  # a carrier from elsewhere is not ours to forward
        state._record(ds, ENCRYPTED_ATTRIBUTES, True)
        del ds[ENCRYPTED_ATTRIBUTES]
    state.walk(ds, top=True)
    remediate_file_meta(ds, state)
    result = state.result
    result.identifiers = set(result.uid_map) | result.matcher.values
    if LONGITUDINAL_MODIFIED in ds:  # overwritten below: its original goes to the backup
        state._record(ds, LONGITUDINAL_MODIFIED, True)
    if profile.modified_dates:
        ds.add_new(LONGITUDINAL_MODIFIED, "CS", "MODIFIED")
    elif profile.full_dates:
        ds.add_new(LONGITUDINAL_MODIFIED, "CS", "UNMODIFIED")
    else:
        ds.add_new(LONGITUDINAL_MODIFIED, "CS", "REMOVED")
    return result
