"""Reading burned-in text: each place of a frame that can hold a line of text (found by
gateway.deid.ocr_regions) read with Tesseract (through tesserocr, in this process).

`read_words(frames, photometric, palette)` renders each frame as 8-bit grey views (luminance,
brightness, and for colour whiteness; palette through its lookup table, monochrome stretched,
MONOCHROME1 inverted), finds the text candidates, and runs Tesseract only on them, each cut out,
enlarged, turned dark on light and read as one line.

Reads are remembered in this process only (never on disk), keyed by a digest of the grey pixels
Tesseract would see: a frame seen again (the same image in another transfer syntax, a cine loop
repeating its overlay, the check after a redaction that left a line untouched) is not read again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.deid.ocr_regions import (
    BRIGHT,
    DARK,
    Region,
    edge_lines,
    glyph_chains,
    ink_only,
    stands_out,
    without_rules,
)

# Tesseract's OpenMP pool is no use to one image per call, and its threads do not survive fork.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata",
                 "/usr/share/tessdata", "/usr/local/share/tessdata")
LANGUAGE = "eng"

Box = tuple[int, int, int, int]  # x, y, width, height in the frame's pixels
Read = tuple[int, Box, str]  # (line, box, text) of one word


class OcrUnavailable(RuntimeError):
    """The OCR engine (tesserocr, or Tesseract's English model) is not installed."""


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: where it is and what it says (text stays in memory only)."""

    frame: int
    line: int  # index of its line within the frame
    box: Box
    text: str


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
            path=tessdata_dir(), lang=LANGUAGE, psm=tesserocr.PSM.SINGLE_LINE,
            variables={
                # names, IDs and dates are no dictionary words: read the characters as they are
                "load_system_dawg": "F", "load_freq_dawg": "F",
                # every line is handed over dark on light: no second, inverted read
                "tessedit_do_invert": "F",
            },
        )
        _local.api, _local.pid = api, os.getpid()
    return api


def _read_image(gray: np.ndarray) -> list[Read]:
    """(line, box, text) of every word Tesseract reads in one 8-bit grey image of one line."""
    import tesserocr
    from PIL import Image

    api = _api()
    api.SetImage(Image.fromarray(np.ascontiguousarray(gray), mode="L"))
    api.Recognize()
    words: list[Read] = []
    iterator = api.GetIterator()
    if iterator is None:
        return words
    level = tesserocr.RIL.WORD
    for item in tesserocr.iterate_level(iterator, level):
        try:
            text = (item.GetUTF8Text(level) or "").strip()
        except RuntimeError:  # tesserocr's way of saying the word has no text
            continue
        box = item.BoundingBox(level)
        if not text or box is None:
            continue
        x0, y0, x1, y1 = box
        words.append((0, (x0, y0, x1 - x0, y1 - y0), text))
    return words


# ---------------------------------------------------------------------------- images


def to_gray8(frame: np.ndarray, photometric: str, palette: Callable[[np.ndarray], np.ndarray]
             | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One decoded frame (rows, columns, samples) → 8-bit grey views: luminance as a viewer
    shows it; brightness (the strongest colour component), where coloured text stands out;
    and, for colour, whiteness (the weakest component), where white text stands out of colour
    flow. Each is stretched from its minimum to its maximum; MONOCHROME1 is inverted."""
    if photometric == "PALETTE COLOR" and palette is not None:
        frame = palette(frame[..., 0])
        photometric = "RGB"
    data = frame.astype(np.float32)
    if data.ndim == 3 and data.shape[2] == 3:
        if photometric.startswith("YBR"):  # to RGB (full range BT.601)
            y, cb, cr = data[..., 0], data[..., 1] - 128, data[..., 2] - 128
            data = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr,
                             y + 1.772 * cb], axis=-1)
        r, g, b = data[..., 0], data[..., 1], data[..., 2]
        luma = r * 0.299 + g * 0.587 + b * 0.114
        # channel by channel: numpy reduces a last axis of three slowly
        value, white = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    else:
        luma = value = data[..., 0] if data.ndim == 3 else data
        white = None
    return (_stretch(luma, photometric), _stretch(value, photometric),
            None if white is None else _stretch(white, photometric))


def _stretch(data: np.ndarray, photometric: str) -> np.ndarray:
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    gray = (data - lo) * (255.0 / (hi - lo))
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- the cache


class _Memo:
    """A bounded map from a digest to a read, in this process's memory only (least recently
    used first out). Keys are digests of pixels, never pixels or text."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[bytes, list[Read]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: bytes) -> list[Read] | None:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: bytes, value: list[Read]) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()


_FRAMES = _Memo(64)  # whole frames: the same image again (another transfer syntax, a cine loop)
_LINES = _Memo(4096)  # single lines: a line untouched by a redaction, an overlay on every frame


def clear_cache() -> None:
    """Forget every read remembered in this process."""
    _FRAMES.clear()
    _LINES.clear()


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(b"%d:" % len(part))
        h.update(part)
    return h.digest()


# ---------------------------------------------------------------------------- reading


def read_words(frames: np.ndarray, photometric: str,
               palette: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Word]:
    """Every word of every frame of `frames` (frames, rows, columns, samples).

    Every frame is read (no sampling); a frame whose grey pixels were read before, in this
    call or an earlier one, is not read again. The lines of the two finders are numbered
    apart, so a line read twice is never joined to itself."""
    words: list[Word] = []
    for index in range(frames.shape[0]):
        luma, value, white = to_gray8(frames[index], photometric, palette)
        key = _digest(b"%d,%d" % luma.shape, luma.tobytes(), value.tobytes(),
                      b"" if white is None else white.tobytes())
        found = _FRAMES.get(key)
        if found is None:
            found = _read_frame(luma, value, white)
            _FRAMES.put(key, found)
        words += [Word(index, line, box, text) for line, box, text in found]
    return words


LINE_OFFSET = 1 << 20  # the lines of each finder are numbered apart
LINE_TARGET = 36  # pixels: the height a line is enlarged to before it is read
BORDER = 10  # pixels of a line's own ground around it when it is read


def _read_frame(luma: np.ndarray, value: np.ndarray, white: np.ndarray | None) -> list[Read]:
    """The words of one frame: every text candidate read as one line, as the frame shows it;
    and each chain of light glyphs once more with only its ink and the soft edges of its glyphs
    (text straight over a busy image reads only so; dark text is drawn on a label, which the
    first read sees clean)."""
    inks = [(without_rules(value >= BRIGHT), value, 0), (without_rules(luma <= DARK), luma, 255)]
    if white is not None:
        inks.append((without_rules(white >= BRIGHT), white, 0))
    chains = [[r for r in glyph_chains(ink) if stands_out(r, ink, gray, ground)]
              for ink, gray, ground in inks]
    reads: list[tuple[np.ndarray, list[Region]]] = [
        (luma, [r for found in chains for r in found]), (luma, edge_lines(luma))]
    reads += [(ink_only(ink, gray, ground), found)
              for (ink, gray, ground), found in zip(inks, chains, strict=True) if ground == 0]
    words: list[Read] = []
    for n, (gray, places) in enumerate(reads):
        words += [(line + n * LINE_OFFSET, box, text)
                  for line, box, text in _read_lines(gray, places)]
    return words


def _read_lines(gray: np.ndarray, regions: list[Region]) -> list[Read]:
    """The words of every region of `gray`, each read on its own; regions side by side on one
    row are one line, read left to right. A region read before (same place, same pixels) is
    not read again."""
    found = []
    rows: list[tuple[int, int]] = []
    for r0, r1, c0, c1 in sorted(set(regions), key=lambda r: (r[0], r[2])):
        n = next((i for i, row in enumerate(rows) if _one_row(row, (r0, r1))), None)
        if n is None:
            n = len(rows)
            rows.append((r0, r1))
        crop = gray[r0:r1, c0:c1]
        key = _digest(b"%d,%d,%d,%d" % (r0, r1, c0, c1), crop.tobytes())
        mine = _LINES.get(key)
        if mine is None:
            mine = _read_line(crop, r0, c0)
            _LINES.put(key, mine)
        found += [(n, box, text) for _, box, text in mine]
    found.sort(key=lambda item: (item[0], item[1][0]))
    return found


def _one_row(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two spans of rows hold one line: each overlaps half the other, or more."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    return 2 * overlap >= max(a[1] - a[0], b[1] - b[0])


def _read_line(crop: np.ndarray, r0: int, c0: int) -> list[Read]:
    """The words of one line region (its top-left corner at row r0, column c0), read alone:
    enlarged smoothly, dark on light, framed in its own background."""
    rows, columns = crop.shape
    scale = max(1, min(4, -(-LINE_TARGET // rows)))
    if scale > 1:  # smooth enlargement: glyph outlines Tesseract knows, not pixel steps
        from PIL import Image

        crop = np.asarray(Image.fromarray(crop).resize(
            (columns * scale, rows * scale), Image.Resampling.BICUBIC))
    # a margin of the line's own background (its commonest value): a label read with the
    # dark image around it is taken for a picture, not text
    values, counts = np.unique(crop, return_counts=True)
    background = int(values[counts.argmax()])
    if background < 128:  # light text on dark: Tesseract reads dark on light
        crop, background = 255 - crop, 255 - background
    crop = np.pad(crop, BORDER, mode="constant", constant_values=background)
    found = []
    for _, (x, y, w, h), text in _read_image(crop):
        x0 = c0 + max(0, (x - BORDER) // scale)
        y0 = r0 + max(0, (y - BORDER) // scale)
        x1 = min(c0 + columns, c0 + -(-(x + w - BORDER) // scale))
        y1 = min(r0 + rows, r0 + -(-(y + h - BORDER) // scale))
        if x1 > x0 and y1 > y0:
            found.append((0, (x0, y0, x1 - x0, y1 - y0), text))
    return found
