"""Burned-in text: read the words of decoded frames with Tesseract and decide which identify.

`read_words(frames, ...)` renders each frame as 8-bit grey (colour → luminance, palette through
its lookup table, monochrome stretched from its minimum to its maximum, MONOCHROME1 inverted),
enlarges small frames, and runs Tesseract (through tesserocr, in this process) in sparse-text
mode. Frames whose pixels are identical are read once.

`TextPolicy.classify(words, identifiers)` marks a word identifying when its line of text has, over
the word, an identifier of the object (matched as whole tokens, ignoring case and punctuation,
tolerant of one misread character in longer tokens), a date as people write it, an ID-like run of
seven or more digits, or one of the configured patterns. With `redact_all` every word counts.

Nothing here does I/O beyond the OCR engine; words and their text never leave through an
exception or a log — callers get boxes and kinds.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Tesseract's OpenMP pool is no use to one image per call, and its threads do not survive fork.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
LANGUAGE = "eng"
SMALL_FRAME = 1000  # frames whose longer side is below this are read enlarged twice

Box = tuple[int, int, int, int]  # x, y, width, height in the frame's pixels
Spans = Callable[[str], Iterable[tuple[int, int]]]  # text → [start, end) of identifiers in it

KIND_IDENTIFIER = "an identifier of the object"
KIND_DATE = "a date"
KIND_NUMBER = "an ID-like number"
KIND_PATTERN = "a configured pattern"
KIND_TEXT = "text"  # redact_all: any word


class OcrUnavailable(RuntimeError):
    """The OCR engine (tesserocr, or Tesseract's English model) is not installed."""


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: where it is and what it says (text stays in memory only)."""

    frame: int
    line: int  # index of its line within the frame
    box: Box
    text: str


@dataclass(frozen=True)
class Finding:
    """A word judged identifying (or, with redact_all, any word) and why, without its text."""

    frame: int
    box: Box
    kind: str


# ---------------------------------------------------------------------------- engine


def tessdata_dir() -> str:
    """Where Tesseract's English model is: $TESSDATA_PREFIX, or a Debian/usual location."""
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for folder in candidates:
        if folder and (Path(folder) / f"{LANGUAGE}.traineddata").is_file():
            return folder
    raise OcrUnavailable(f"no Tesseract model {LANGUAGE}.traineddata (install the Debian package "
                         "tesseract-ocr-eng, or set TESSDATA_PREFIX)")


def check_available() -> None:
    """Raise OcrUnavailable, saying what to install, unless OCR can run here."""
    try:
        import tesserocr  # noqa: F401
    except ImportError:
        raise OcrUnavailable("the OCR engine is not installed: pip install 'gantry[ocr]'") from None
    tessdata_dir()


_local = threading.local()


def _api():  # -> tesserocr.PyTessBaseAPI, one per thread (and so per forked process)
    api = getattr(_local, "api", None)
    if api is None or getattr(_local, "pid", None) != os.getpid():
        check_available()
        import tesserocr

        api = tesserocr.PyTessBaseAPI(
            path=tessdata_dir(), lang=LANGUAGE, psm=tesserocr.PSM.SPARSE_TEXT_OSD,
            # names, IDs and dates are no dictionary words: read the characters as they are
            variables={"load_system_dawg": "F", "load_freq_dawg": "F"},
        )
        _local.api, _local.pid = api, os.getpid()
    return api


def _read_image(gray: np.ndarray, line_only: bool = False) -> list[tuple[int, Box, str]]:
    """(line, box, text) of every word Tesseract reads in one 8-bit grey image (`line_only`:
    the image is one line of text)."""
    import tesserocr
    from PIL import Image

    api = _api()
    api.SetPageSegMode(tesserocr.PSM.SINGLE_LINE if line_only else tesserocr.PSM.SPARSE_TEXT_OSD)
    api.SetImage(Image.fromarray(np.ascontiguousarray(gray), mode="L"))
    api.Recognize()
    words: list[tuple[int, Box, str]] = []
    iterator = api.GetIterator()
    if iterator is None:
        return words
    line = -1
    level = tesserocr.RIL.WORD
    for item in tesserocr.iterate_level(iterator, level):
        if item.IsAtBeginningOf(tesserocr.RIL.TEXTLINE):
            line += 1
        try:
            text = (item.GetUTF8Text(level) or "").strip()
        except RuntimeError:  # tesserocr's way of saying the word has no text
            continue
        box = item.BoundingBox(level)
        if not text or box is None:
            continue
        x0, y0, x1, y1 = box
        words.append((max(line, 0), (x0, y0, x1 - x0, y1 - y0), text))
    return words


# ---------------------------------------------------------------------------- images


def to_gray8(frame: np.ndarray, photometric: str, palette: Callable[[np.ndarray], np.ndarray]
             | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One decoded frame (rows, columns, samples) → two 8-bit grey views: luminance as a viewer
    shows it, and brightness (the strongest colour component), where coloured text stands out.
    Both are stretched from their minimum to their maximum; MONOCHROME1 is inverted."""
    if photometric == "PALETTE COLOR" and palette is not None:
        frame = palette(frame[..., 0])
        photometric = "RGB"
    data = frame.astype(np.float32)
    if data.ndim == 3 and data.shape[2] == 3:
        if photometric.startswith("YBR"):  # to RGB (full range BT.601)
            y, cb, cr = data[..., 0], data[..., 1] - 128, data[..., 2] - 128
            data = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr,
                             y + 1.772 * cb], axis=-1)
        luma = data[..., 0] * 0.299 + data[..., 1] * 0.587 + data[..., 2] * 0.114
        value = data.max(axis=-1)
    else:
        luma = value = data[..., 0] if data.ndim == 3 else data
    return _stretch(luma, photometric), _stretch(value, photometric)


def _stretch(data: np.ndarray, photometric: str) -> np.ndarray:
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    gray = (data - lo) * (255.0 / (hi - lo))
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def read_words(frames: np.ndarray, photometric: str,
               palette: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Word]:
    """Every word of every frame of `frames` (frames, rows, columns, samples).

    Every frame is read three ways: whole, as shown; whole, with only its brightest pixels
    (burned-in text is drawn at or near full brightness, or dark on a label that is); and line
    by line (each place that looks like a line of text, cut out and read alone; a line whose
    place and pixels were read in an earlier frame is not read again). Lines of the three reads
    are numbered apart. No sampling: reading the first frame whole and the others line by line
    misses text (tried on the multi-frame test samples)."""
    words: list[Word] = []
    seen: dict[bytes, list[tuple[int, Box, str]]] = {}
    lines: dict[bytes, list[tuple[int, Box, str]]] = {}
    for index in range(frames.shape[0]):
        frame = frames[index]
        key = frame.tobytes()
        found = seen.get(key)
        if found is None:
            luma, value = to_gray8(frame, photometric, palette)
            found = _read_frame(luma)
            bright = np.where(value >= BRIGHT, 255, 0).astype(np.uint8)
            found += [(line + LINE_OFFSET, box, text) for line, box, text in _read_frame(bright)]
            found += [(line + 2 * LINE_OFFSET, box, text)
                      for line, box, text in _read_lines(luma, lines)]
            seen[key] = found
        words += [Word(index, line, box, text) for line, box, text in found]
    return words


BRIGHT = 200  # of 255: the threshold of the second read
LINE_OFFSET = 1 << 20  # lines of the second read are numbered apart from the first's


def _read_frame(gray: np.ndarray) -> list[tuple[int, Box, str]]:
    """The words of one grey frame, in its own coordinates (small frames are read enlarged)."""
    rows, columns = gray.shape
    scale = 2 if max(rows, columns) < SMALL_FRAME else 1
    if scale > 1:
        gray = np.repeat(np.repeat(gray, scale, axis=0), scale, axis=1)
    # a quiet border: text touching the frame's edge is found more reliably
    gray = np.pad(gray, BORDER, mode="edge")
    found = []
    for line, (x, y, w, h), text in _read_image(gray):
        x0, y0 = max(0, (x - BORDER) // scale), max(0, (y - BORDER) // scale)
        x1 = min(columns, -(-(x + w - BORDER) // scale))
        y1 = min(rows, -(-(y + h - BORDER) // scale))
        if x1 > x0 and y1 > y0:
            found.append((line, (x0, y0, x1 - x0, y1 - y0), text))
    return found


BORDER = 10
INK_CONTRAST = 48  # of 255: how far a stroke stands from its neighbourhood's mean
LINE_HEIGHT = (7, 48)  # pixels: the heights of a line of burned-in text looked for
LINE_TARGET = 36  # pixels: the height a line is enlarged to before it is read


def _line_regions(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of the places that look like one line of text: sharp edges
    (glyph strokes, a label's outline) joined along the line, split where a row has none, of a
    text line's height and at least twice as wide as high."""
    from scipy import ndimage

    data = gray.astype(np.int16)
    edge = np.zeros(gray.shape, dtype=bool)
    edge[:, 1:] |= np.abs(data[:, 1:] - data[:, :-1]) >= INK_CONTRAST
    edge[1:, :] |= np.abs(data[1:, :] - data[:-1, :]) >= INK_CONTRAST
    joined = ndimage.binary_closing(edge, structure=np.ones((1, 9), dtype=bool))
    labels, _ = ndimage.label(joined)
    lo, hi = LINE_HEIGHT
    regions = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
        mine = labels[rows, cols] == index
        # a row of a line has many edges; one crossed only by a few vertical lines has not
        busy = mine.sum(axis=1) >= max(2, (cols.stop - cols.start) // 25)
        start = None
        for r, on in enumerate([*busy, False]):  # runs of rows with edges: one line each
            if on and start is None:
                start = r
            elif not on and start is not None:
                height = r - start
                if lo <= height <= hi:
                    used = np.flatnonzero(mine[start:r].any(axis=0))
                    for c0, c1 in _segments(used, gap=height):
                        if c1 - c0 >= 2 * height:
                            regions.append((rows.start + start, rows.start + r,
                                            cols.start + c0, cols.start + c1))
                start = None
    return regions


def _segments(used: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs [c0, c1) of the sorted column indices `used`, split where `gap` or more columns in
    a row are unused (a line of text has no such gap; what stands beside it often does)."""
    if not used.size:
        return []
    cuts = np.flatnonzero(np.diff(used) > gap)
    starts = [int(used[0]), *(int(used[c + 1]) for c in cuts)]
    ends = [*(int(used[c]) + 1 for c in cuts), int(used[-1]) + 1]
    return list(zip(starts, ends, strict=True))


def _read_lines(gray: np.ndarray, cache: dict[bytes, list[tuple[int, Box, str]]] | None = None
                ) -> list[tuple[int, Box, str]]:
    """The words of every line region of `gray`, each region read on its own, enlarged (a
    region whose pixels and place are in `cache` is not read again)."""
    found = []
    regions = sorted(_line_regions(gray), key=lambda r: (r[0], r[2]))
    rows: list[tuple[int, int]] = []  # regions side by side on one row are one line
    for r0, r1, c0, c1 in regions:
        middle = (r0 + r1) // 2
        n = next((i for i, (a, b) in enumerate(rows) if a <= middle < b), None)
        if n is None:
            n = len(rows)
            rows.append((r0, r1))
        key = b"%d,%d,%d,%d:" % (r0, r1, c0, c1) + gray[r0:r1, c0:c1].tobytes()
        mine = cache.get(key) if cache is not None else None
        if mine is None:
            mine = _read_line(gray, r0, r1, c0, c1)
            if cache is not None:
                cache[key] = mine
        found += [(n, box, text) for _, box, text in mine]
    found.sort(key=lambda item: (item[0], item[1][0]))  # each line left to right
    return found


def _read_line(gray: np.ndarray, r0: int, r1: int, c0: int, c1: int
               ) -> list[tuple[int, Box, str]]:
    """The words of one line region, read alone."""
    found = []
    crop = gray[r0:r1, c0:c1]
    scale = max(1, min(4, -(-LINE_TARGET // (r1 - r0))))
    if scale > 1:  # smooth enlargement: glyph outlines Tesseract knows, not pixel steps
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop).resize(
            (crop.shape[1] * scale, crop.shape[0] * scale), Image.Resampling.BICUBIC))
    # a margin of the line's own background (its commonest value): a label read with the
    # dark image around it is taken for a picture, not text
    values, counts = np.unique(crop, return_counts=True)
    crop = np.pad(crop, BORDER, mode="constant", constant_values=values[counts.argmax()])
    for _, (x, y, w, h), text in _read_image(crop, line_only=True):
        x0 = c0 + max(0, (x - BORDER) // scale)
        y0 = r0 + max(0, (y - BORDER) // scale)
        x1 = min(c1, c0 + -(-(x + w - BORDER) // scale))
        y1 = min(r1, r0 + -(-(y + h - BORDER) // scale))
        if x1 > x0 and y1 > y0:
            found.append((0, (x0, y0, x1 - x0, y1 - y0), text))
    return found


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
            for token in _TOKEN.findall(value):
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
        """[start, end) of each token of `text` that is one of the identifiers."""
        found = []
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
            _widen_names(line_words, kinds)
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


def _widen_names(words: Sequence[Word], kinds: list[str | None]) -> None:
    """A word of letters right next to a name of the object (at most two heights away) is taken
    for another part of the name that OCR misread: 'Nguyen Baa Minh' loses 'Baa' too."""
    changed = True
    while changed:
        changed = False
        for i, word in enumerate(words):
            if kinds[i] or not re.sub(r"^\W+|\W+$", "", word.text).isalpha():
                continue
            for j in (i - 1, i + 1):
                if 0 <= j < len(words) and kinds[j] == KIND_IDENTIFIER and \
                        _gap(words[j].box, word.box) <= 2 * max(word.box[3], words[j].box[3]):
                    kinds[i] = KIND_IDENTIFIER
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
