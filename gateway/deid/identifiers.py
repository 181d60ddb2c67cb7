"""The identifying tokens of one object, and where they occur in a piece of text.

An identifier is compared as a run of whole tokens (a token is a run of letters or a run of
digits; case and punctuation are ignored): `1CT1` is found in `CHEST 1CT1 X`, `chest_1ct1` and
`1-CT-1` but not in `11CT1`; `JONES` in `JONES2` but `PHILIP` not in `PHILIPS`; `12345` not in
`9912345`. A date held as 20240312 is also found written 2024-03-12, 12/03/2024, 12.03.24 or
12 Mar 2024; an ID padded with zeros (00012345) also without them. Accents do not matter, as
systems that write ASCII drop them: GARCÍA is found in `Garcia`, MÜLLER in `MULLER` and, spelled
out, in `Mueller`. An identifier in a script written without spaces between words (Chinese,
Japanese, Korean names with their honorifics, Thai, Lao, Khmer, Burmese, Tibetan) is found
anywhere in the text: `山田` in `山田太郎様`. Clean (C), verify, the audit and the OCR stage all
ask the same `IdentifierSet`, so they agree on what identifies.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from pydicom.dataset import Dataset

from gateway.deid.dummies import TEXT as DUMMY_TEXT
from gateway.deid.profile import Profile
from gateway.deid.values import element_vr, text_values

TOKEN = re.compile(r"\d+|[^\W\d_]+")  # a run of digits, or of letters
# Scripts whose words are not separated by spaces: Thai, Lao, Tibetan, Myanmar, Hangul Jamo,
# Khmer, Hiragana, Katakana, Hangul compatibility Jamo, CJK ideographs (and extensions,
# compatibility), Hangul syllables, halfwidth Katakana.
UNSPACED = re.compile("[\u0e00-\u0fff\u1000-\u109f\u1100-\u11ff\u1780-\u17ff\u3040-\u30ff"
                      "\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                      "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")
MIN_LENGTH = 2  # a token run this long (joined) or longer identifies; single characters do not
MIN_DIGITS = 3  # an ID that is a number identifies from this many digits
UNPADDED = 5  # an ID of leading zeros and this many digits more is found without its zeros too
FOUND_REMEMBERED = 1024  # found_in answers an IdentifierSet remembers, at most (64 sets cached)
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
# An element is a source of identifiers by its VR (UN or none: implicit, looked up) or its tag.
SOURCE_VRS = frozenset({"SQ", "PN", "DA", "DT", "UN", None})
SOURCE_TAGS = ID_TAGS | PLACE_TAGS | {PATIENT_BIRTH_DATE}
DEVICE_TAGS = (0x00080070, 0x00081090)  # Manufacturer, ManufacturerModelName
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")


Form = tuple[str, ...]  # case-folded tokens
# Words a date written out puts between its parts: 29th, 1st of May.
ORDINALS = frozenset({"st", "nd", "rd", "th"})
MONTH_WORDS = frozenset(MONTHS) | frozenset(m[:3] for m in MONTHS)


def _date_words(words: list[str]) -> list[int]:
    """Indexes of `words` to match on: all but an ordinal suffix after a day's number (29th)
    and an "of" between a day and a month (1st of May)."""
    keep: list[int] = []
    for i, word in enumerate(words):
        if keep and len(words[keep[-1]]) <= 2 and words[keep[-1]].isdigit() and (
                word in ORDINALS or (word == "of" and i + 1 < len(words)
                                     and words[i + 1] in MONTH_WORDS)):
            continue
        keep.append(i)
    return keep


# Letters people spell out when they cannot type them (after case folding).
SPELLED_OUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ø": "oe", "å": "aa", "æ": "ae",
                             "œ": "oe"})


# Letters with a stroke, which Unicode does not decompose into a letter and an accent.
STROKED = {"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ŧ": "t", "ı": "i"}


@lru_cache(maxsize=4096)
def unaccented(c: str) -> str:
    """A Latin, Greek or Cyrillic letter without its accents (é → e, ł → l); any other as it is
    (a Hangul syllable is no letter with an accent, a Thai vowel sign no accent to drop)."""
    if not ("\u00c0" <= c < "\u0530" or "\u1e00" <= c <= "\u1eff"):
        return c
    if c in STROKED:
        return STROKED[c]
    return "".join(x for x in unicodedata.normalize("NFD", c) if not unicodedata.combining(x))


def fold(word: str) -> str:
    """`word` as it is compared: case-folded, accents dropped (GARCÍA → garcia)."""
    word = word.casefold()
    return word if word.isascii() else "".join(map(unaccented, word))


def tokens(text: str) -> list[str]:
    """The tokens of `text`, folded."""
    return [fold(m.group()) for m in TOKEN.finditer(text)]


def spellings(text: str) -> set[str]:
    """`text` folded, and with ä, ö, ü, ø, å, æ, œ spelled out too (MÜLLER → muller, mueller):
    how a system that writes ASCII may have written it."""
    folded = text.casefold()
    return {fold(folded), fold(folded.translate(SPELLED_OUT))}


def _spellings(text: str) -> list[list[str]]:
    """The tokens of each of `text`'s spellings."""
    found: list[list[str]] = []
    for spelled in sorted(spellings(text)):
        words = tokens(spelled)
        if words not in found:
            found.append(words)
    return found


def _forms(words: list[str]) -> set[Form]:
    """A run of tokens as written, and joined into one token where that is one (12 03 2024 →
    12032024; letters next to digits are two tokens anyway)."""
    joined = "".join(words)
    return {tuple(words), (joined,)} if joined.isdigit() or joined.isalpha() else (
        {tuple(words)} if words else set())


@lru_cache(maxsize=4096)  # an object's values recur in the next objects of its study
def date_forms(value: str) -> frozenset[Form]:
    """The ways people write the date of a DA (or the date part of a DT) value: 20240312 →
    20240312, 2024-03-12, 12/03/2024, 03/12/2024, 12.03.24, 3/12/24, 12 Mar 2024, March 12 2024,
    12-MAR-2024 ... (each as tokens and as one token)."""
    digits = "".join(c for c in value[:10] if c.isdigit())[:8]
    if len(digits) != 8:
        return frozenset()
    try:
        day = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return frozenset()
    y, yy = f"{day.year:04d}", f"{day.year % 100:02d}"
    forms: set[Form] = set()
    for d in {f"{day.day:02d}", str(day.day)}:
        for m in {f"{day.month:02d}", str(day.month)}:
            for order in ((y, m, d), (d, m, y), (m, d, y), (d, m, yy), (m, d, yy)):
                forms |= _forms(list(order))
        for mon in (MONTHS[day.month - 1], MONTHS[day.month - 1][:3]):
            for order in ((d, mon, y), (mon, d, y), (d, mon, yy), (y, mon, d)):
                forms |= _forms(list(order))
    return frozenset(forms)


@lru_cache(maxsize=4096)  # an object's values recur in the next objects of its study
def name_forms(value: str) -> frozenset[Form]:
    """A person name's identifying words: each word of its family, given and middle names, and
    each of those names whole (prefixes, suffixes and name particles alone do not identify).
    A name holding digits (`CQ500-CT-310`) is an ID: it identifies only whole."""
    forms: set[Form] = set()
    for group in value.split("="):  # alphabetic, ideographic, phonetic
        for component in group.split("^")[:3]:
            for words in _spellings(component):
                if not any(c.isdigit() for c in component):
                    forms.update((w,) for w in words if w not in PARTICLES)
                if all(len(w) == 1 for w in words):
                    continue  # initials (`S R`) joined are no word of the name: SR, MR, CT
                forms |= _id_forms(words)
    return frozenset(forms)


@lru_cache(maxsize=4096)  # an object's values recur in the next objects of its study
def id_forms(value: str) -> frozenset[Form]:
    """An ID or number: its tokens (1CT1 → 1 CT 1), and joined where that is one token. A number
    of fewer than MIN_DIGITS digits (Study ID 17) identifies nothing: it is a version, a count."""
    return _id_forms(tokens(value))


def _id_forms(words: list[str]) -> frozenset[Form]:
    forms = _forms(words)
    joined = "".join(words)
    if joined.isdigit() and joined.startswith("0") and len(joined.lstrip("0")) >= UNPADDED:
        forms.add((joined.lstrip("0"),))  # MRN 00012345 written 12345 by another system
    return frozenset(f for f in forms if len("".join(f)) >= MIN_DIGITS or not "".join(f).isdigit())


@lru_cache(maxsize=4096)  # an object's values recur in the next objects of its study
def place_forms(value: str) -> frozenset[Form]:
    """An institution or address: the whole value and each part between commas, carets,
    semicolons or line breaks."""
    parts = re.split(r"[,^;\r\n]", value)
    return frozenset(f for p in [value, *parts] for words in _spellings(p) for f in _forms(words))


class IdentifierSet:
    """The identifying tokens of one object, collected from its ORIGINAL header."""

    def __init__(self, forms: Iterable[Form] = (), values: Iterable[str] = (),
                 origins: Iterable[tuple[Form, int]] = ()) -> None:
        """`forms`: token runs that identify; `values`: the names and IDs they came from (not
        dates nor places, whose words alone do not identify), for OCR's tolerant matcher;
        `origins`: the tag each form was first read from."""
        self.values = frozenset(values)
        self._origins = dict(origins)
        dummy = (DUMMY_TEXT.casefold(),)
        self._forms = frozenset(f for f in forms
                                if len("".join(f)) >= MIN_LENGTH and f != dummy)
        index: dict[str, list[Form]] = {}
        for form in sorted(self._forms, key=len, reverse=True):
            index.setdefault(form[0], []).append(form)
        self._index = index
        # Found as a substring, not as whole tokens: words of these scripts run together.
        self._unspaced = sorted({"".join(f) for f in self._forms if UNSPACED.search("".join(f))},
                                key=len, reverse=True)
        self._found: dict[str, bool] = {}  # found_in's answers (the set never changes)

    @classmethod
    def from_dataset(cls, ds: Dataset, profile: Profile | None = None) -> IdentifierSet:
        """Names (every PN), IDs, dates and places of `ds` at every depth. With a `profile`,
        an element the profile keeps as it is (K, an override `keep`, or an unlisted non-PN
        element) is no identifier: its value may be exported by choice. Nor is a place named in
        the device's maker or model name (test sites name their institution after the maker)."""
        device = tuple(v for tag in DEVICE_TAGS if tag in ds._dict
                       for v in text_values(ds, tag))
        return _built(_collect(ds, profile), device)

    def origin(self, text: str) -> int | None:
        """The tag of the original element the first identifier found in `text` came from (for
        messages that must say what survived without saying its value)."""
        for start, end in self._matches(text):
            words = tokens(text[start:end])
            form = tuple(words[i] for i in _date_words(words))
            joined = ("".join(form),)
            return self._origins.get(form, self._origins.get(joined))
        return None

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
        """Whether `text` holds any identifier of the object. (Answers are remembered: the
        objects of a study share their set and most of their values.)"""
        found = self._found.get(text)
        if found is None:
            found = self._search(text)
            if len(self._found) < FOUND_REMEMBERED:
                self._found[text] = found
        return found

    def _search(self, text: str) -> bool:
        index = self._index
        if not index:
            return False
        folded = text.casefold()
        words = TOKEN.findall(folded) if folded.isascii() else [fold(w) for w in
                                                                TOKEN.findall(folded)]
        if not ORDINALS.isdisjoint(words) or "of" in words:
            words = [words[i] for i in _date_words(words)]
        for i, word in enumerate(words):
            for form in index.get(word, ()):
                if len(form) == 1 or tuple(words[i:i + len(form)]) == form:
                    return True
        return any(u in folded for u in self._unspaced)

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
        """Spans of token runs that are a form of an identifier, and of identifiers of an
        unspaced script anywhere in the text; by start (longest first)."""
        if not self._index:
            return
        runs = list(TOKEN.finditer(text))
        words = [fold(m.group()) for m in runs]
        if not ORDINALS.isdisjoint(words) or "of" in words:
            kept = _date_words(words)
            runs, words = [runs[i] for i in kept], [words[i] for i in kept]
        index = self._index
        found: list[tuple[int, int]] = []
        for i, word in enumerate(words):
            for form in index.get(word, ()):
                n = len(form)
                if n == 1 or tuple(words[i:i + n]) == form:
                    found.append((runs[i].start(), runs[i + n - 1].end()))
                    break
        for u in self._unspaced:  # these scripts have no case: their offsets are the text's
            start = text.find(u)
            while start >= 0:
                found.append((start, start + len(u)))
                start = text.find(u, start + 1)
        yield from sorted(found, key=lambda span: (span[0], -span[1]))


Entry = tuple[int, Callable[[str], frozenset[Form]], str]  # tag, kind of forms, value


@lru_cache(maxsize=64)  # the objects of one study share their identifying values
def _built(entries: tuple[Entry, ...], device: tuple[str, ...]) -> IdentifierSet:
    """The set of the identifying values `entries` (in the order they were read), places
    named in the device's maker or model name (`device`) left out."""
    people: dict[Form, int] = {}
    places: dict[Form, int] = {}
    values: dict[str, bool] = {}
    for tag, kind, value in entries:
        if kind is not date_forms and value:
            values[value] = values.get(value, False) or kind is place_forms
        ranged = kind is date_forms and "-" in value  # a range A-B, or 2024-03-12
        found = places if kind is place_forms else people
        for part in (value, *value.split("-")) if ranged else (value,):
            for form in kind(part):
                found.setdefault(form, tag)
    words = [tokens(v) for v in device]
    places = {f: t for f, t in places.items() if not any(_occurs(f, d) for d in words)}
    kept = {v for v, place in values.items() if not place}  # places match only whole
    origins = {**places, **people}
    return IdentifierSet(frozenset(origins), frozenset(kept), frozenset(origins.items()))


def _kept_by(profile: Profile, tag: int, vr: str, sop_class: str) -> bool:
    override = profile.overrides.get(tag)
    if override is not None:
        return override.action == "keep"
    code = profile.code_for(tag, sop_class)
    return code == "K" or (code is None and vr != "PN")


def _occurs(form: Form, words: list[str]) -> bool:
    """Whether `form` is a run of `words`, or (one token) a run of them joined."""
    n = len(form)
    if any(tuple(words[i:i + n]) == form for i in range(len(words) - n + 1)):
        return True
    return n == 1 and any("".join(words[i:j]) == form[0]
                          for i in range(len(words)) for j in range(i + 2, len(words) + 1))


def _collect(ds: Dataset, profile: Profile | None) -> tuple[Entry, ...]:
    """The identifying values of `ds` at every depth, each with its tag and the kind of forms
    it identifies by (names, IDs, places, dates), in the order they are read."""
    entries: list[Entry] = []
    sop_class = " ".join(text_values(ds, 0x00080016)) if 0x00080016 in ds._dict else ""

    def walk(item: Dataset) -> None:
        for key, elem in list(item._dict.items()):
            tag = int(key)
            vr = elem.VR
            if vr not in SOURCE_VRS and tag not in SOURCE_TAGS:
                continue  # the common case, decided without a dictionary look-up
            if tag >> 16 & 1 or tag >> 16 == 0x0002 or not tag & 0xFFFF:
                continue
            vr = element_vr(item, key)
            if vr == "SQ":
                for sub in item[key].value or ():
                    walk(sub)
                continue
            if vr == "PN":
                kind = name_forms
            elif tag in ID_TAGS:
                kind = id_forms
            elif tag in PLACE_TAGS:
                kind = place_forms
            elif vr in ("DA", "DT") or tag == PATIENT_BIRTH_DATE:
                kind = date_forms
            else:
                continue
            if profile is not None and _kept_by(profile, tag, vr, sop_class):
                continue
            entries.extend((tag, kind, value) for value in text_values(item, key))

    walk(ds)
    return tuple(entries)
