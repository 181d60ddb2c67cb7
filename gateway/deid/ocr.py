"""Burned-in text: which words read in decoded frames identify.

`read_words(frames, ...)` (gateway.deid.ocr_engine) finds the places that can hold text and reads
them with Tesseract; it is re-exported here with the engine's errors.

`TextPolicy.classify(words, identifiers)` marks a word identifying when its line of text has, over
the word, an identifier of the object (matched as whole tokens, ignoring case and punctuation,
tolerant of one misread character in longer tokens), a date as people write it, an ID-like run of
seven or more digits, or one of the configured patterns. With `redact_all` every word counts.

Nothing here does I/O beyond the OCR engine; words and their text never leave through an
exception or a log — callers get boxes and kinds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.deid.identifiers import spellings, unaccented
from gateway.deid.ocr_engine import (  # noqa: F401  (the face of OCR: readers import from here)
    Box,
    OcrUnavailable,
    Word,
    check_available,
    clear_cache,
    read_words,
)

Spans = Callable[[str], Iterable[tuple[int, int]]]  # text → [start, end) of identifiers in it

KIND_IDENTIFIER = "an identifier of the object"
KIND_DATE = "a date"
KIND_NUMBER = "an ID-like number"
KIND_PATTERN = "a configured pattern"
KIND_TEXT = "text"  # redact_all: any word


@dataclass(frozen=True)
class Finding:
    """A word judged identifying (or, with redact_all, any word) and why, without its text."""

    frame: int
    box: Box
    kind: str


# ---------------------------------------------------------------------------- identifying text

_MONTHS = ("jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|"
           "june|july|august|september|october|november|december")
DATE_PATTERNS = (  # matched on the line with digit look-alikes in numbers read as digits
    # no end anchor: OCR often reads a stroke after the last digit as one more ('|' → 1)
    r"(?<![0-9])[0-9]{4}[-/. ][0-9]{1,2}[-/. ][0-9]{1,2}",  # 2024-03-12, 2024/3/12
    r"(?<![0-9])[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{2,4}",  # 12/03/2024, 12.3.24
    r"(?<![0-9])[0-9]{4}[-/.][0-9]{1,2}[-/.]",  # 2024-03- (a day OCR could not read)
    # with a month's name, any number after it is taken for a year (OCR adds or drops digits)
    rf"(?<![0-9])[0-3]?[0-9][- .]*(?:{_MONTHS})\.?[- .,]*[0-9]{{2,5}}",
    rf"\b(?:{_MONTHS})\.?[- ]*[0-3]?[0-9](?:st|nd|rd|th)?,?[- ]*[0-9]{{2,5}}",
    # a part of such a date, when OCR loses the rest: day and month, or month and year
    rf"(?<![0-9])[0-9]{{1,2}}(?:st|nd|rd|th)?[- .]*(?:{_MONTHS})\b",
    rf"\b(?:{_MONTHS})\.?[- .,]*[0-9]{{4}}",
)
ID_PATTERN = r"[0-9]{7,}"
# what OCR reads in place of a digit inside a number
_AS_DIGIT = str.maketrans({"O": "0", "o": "0", "D": "0", "Q": "0", "I": "1", "l": "1",
                           "|": "1", "i": "1", "!": "1", "S": "5", "s": "5", "B": "8",
                           "Z": "2", "z": "2", "G": "6", "g": "9", "q": "9", "T": "7"})
# classes of characters OCR confuses, for matching identifier tokens
_CONFUSABLE = str.maketrans({"0": "O", "Q": "O", "D": "O", "1": "I", "L": "I", "|": "I",
                             "!": "I", "J": "I", "5": "S", "8": "B", "2": "Z", "6": "G",
                             "V": "U", "Y": "U"})
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_UID = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")
MIN_TOKEN = 2


def _as_digits(text: str) -> str:
    """`text` with look-alikes of digits read as digits inside words that have digits (the
    same length: spans of the result are spans of `text`)."""
    return re.sub(r"\S+", lambda m: m.group().translate(_AS_DIGIT)
                  if any(c.isdigit() for c in m.group()) else m.group(), text)


def _canonical(token: str) -> str:
    return token.upper().translate(_CONFUSABLE)


def _near(a: str, b: str) -> bool:
    """Equal, or (both 5 characters or more) one substitution, insertion or deletion apart."""
    if a == b:
        return True
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


class IdentifierTokens:
    """The identifiers of one object as tokens, matched in OCR text as whole tokens."""

    def __init__(self, values: Iterable[str]) -> None:
        words: set[str] = set()
        numbers: set[str] = set()
        for value in values:
            value = str(value).strip()
            if not value or _UID.match(value):
                continue  # an original UID is never burned in as something a reader could use
            for token in {t for spelled in spellings(value) for t in _TOKEN.findall(spelled)}:
                if token.isdigit():
                    if len(token) >= 3:
                        numbers.add(token)
                elif len(token) >= MIN_TOKEN:
                    words.add(_canonical(token))
        self.words = frozenset(words)
        self.numbers = frozenset(numbers)

    def __bool__(self) -> bool:
        return bool(self.words or self.numbers)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """[start, end) of each token of `text` that is one of the identifiers (accents read
        on the image are dropped first, letter for letter: the spans are the text's)."""
        found = []
        if not text.isascii():
            text = "".join(u if len(u := unaccented(c)) == 1 else c for c in text)
        for m in _TOKEN.finditer(text):
            token = m.group()
            digits = token.translate(_AS_DIGIT)
            if digits.isdigit() and digits in self.numbers:
                found.append(m.span())
                continue
            canon = _canonical(token)
            if canon in self.words or (len(canon) >= 5 and any(
                    _near(canon, w) or (len(w) >= 5 and w in canon) for w in self.words)):
                found.append(m.span())  # OCR runs words together: a long token inside counts
        return found


@dataclass(frozen=True)
class TextPolicy:
    """What counts as identifying burned-in text (the `redaction.ocr_*` settings)."""

    patterns: tuple[str, ...] = ()
    redact_all: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "_dates", [re.compile(p, re.IGNORECASE) for p in DATE_PATTERNS])
        object.__setattr__(self, "_number", re.compile(ID_PATTERN))
        object.__setattr__(self, "_own", [re.compile(p, re.IGNORECASE) for p in self.patterns])

    def line_spans(self, text: str, identifiers: Sequence[Spans]) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every identifying stretch of one line of text."""
        found: list[tuple[int, int, str]] = []
        for spans in identifiers:
            found += [(s, e, KIND_IDENTIFIER) for s, e in spans(text)]
        numeric = _as_digits(text)
        for date in self._dates:  # type: ignore[attr-defined]
            found += [(*m.span(), KIND_DATE) for m in date.finditer(numeric)]
        found += [(*m.span(), KIND_NUMBER)
                  for m in self._number.finditer(numeric)]  # type: ignore[attr-defined]
        for pattern in self._own:  # type: ignore[attr-defined]
            found += [(*m.span(), KIND_PATTERN) for m in pattern.finditer(text)]
        return [f for f in found if f[1] > f[0]]

    def classify(self, words: Sequence[Word], identifiers: Sequence[Spans] = ()
                 ) -> list[Finding]:
        """The words to redact (identifying ones; all of them with `redact_all`)."""
        if self.redact_all:
            return [Finding(w.frame, w.box, KIND_TEXT) for w in words]
        lines: dict[tuple[int, int], list[Word]] = {}
        for word in words:
            if _TOKEN.search(word.text):  # a lone '|' or '—' is a stroke of the image
                lines.setdefault((word.frame, word.line), []).append(word)
        findings = []
        for line_words in lines.values():
            text, starts = "", []
            for word in line_words:
                if text:
                    text += " "
                starts.append(len(text))
                text += word.text
            spans = self.line_spans(text, identifiers)
            kinds: list[str | None] = []
            for word, start in zip(line_words, starts, strict=True):
                end = start + len(word.text)
                kinds.append(next((k for s, e, k in spans if s < end and e > start), None))
            _widen(line_words, kinds)
            findings += _runs(line_words, kinds)
        return findings


def _runs(words: Sequence[Word], kinds: Sequence[str | None]) -> list[Finding]:
    """One finding per run of neighbouring identifying words of a line (at most two heights
    apart), boxing the whole run: the space between two parts of a name is no safer than them."""
    runs: list[tuple[list[Word], str]] = []
    previous: Word | None = None
    for word, kind in zip(words, kinds, strict=True):
        if kind is None:
            previous = None
            continue
        if previous is not None and \
                _gap(previous.box, word.box) <= 2 * max(word.box[3], previous.box[3]):
            runs[-1][0].append(word)
        else:
            runs.append(([word], kind))
        previous = word
    out = []
    for run, kind in runs:
        x0, y0 = min(w.box[0] for w in run), min(w.box[1] for w in run)
        x1 = max(w.box[0] + w.box[2] for w in run)
        y1 = max(w.box[1] + w.box[3] for w in run)
        out.append(Finding(run[0].frame, (x0, y0, x1 - x0, y1 - y0), kind))
    return out


def _widen(words: Sequence[Word], kinds: list[str | None]) -> None:
    """A word right next to an identifying one (at most two heights away) that looks like
    another part of it is taken for a part OCR misread: a word of letters beside a name
    ('Nguyen Baa Minh' loses 'Baa' too), a number beside a date ('91 Mar 1960')."""
    changed = True
    while changed:
        changed = False
        for i, word in enumerate(words):
            core = re.sub(r"^\W+|\W+$", "", word.text)
            kind = KIND_IDENTIFIER if core.isalpha() else KIND_DATE if \
                any(c.isdigit() for c in core) else None
            if kinds[i] or kind is None:
                continue
            for j in (i - 1, i + 1):
                if 0 <= j < len(words) and kinds[j] == kind and \
                        _gap(words[j].box, word.box) <= 2 * max(word.box[3], words[j].box[3]):
                    kinds[i] = kind
                    changed = True
                    break


def _gap(a: Box, b: Box) -> int:
    """Horizontal distance between two boxes (0 when they overlap)."""
    return max(0, max(a[0], b[0]) - min(a[0] + a[2], b[0] + b[2]))


def padded(box: Box, rows: int, columns: int) -> Box:
    """A word's box grown by half its height (at least 3 pixels) on every side, so
    that no stroke of a glyph stays outside it."""
    x, y, w, h = box
    pad = max(3, h // 2)
    x0, y0 = max(0, x - pad), max(0, y - pad)
    x1, y1 = min(columns, x + w + pad), min(rows, y + h + pad)
    return (x0, y0, x1 - x0, y1 - y0)
