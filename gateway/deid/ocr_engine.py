"""Reading burned-in text: find the places in a frame that can hold a line of text, and read
each with Tesseract (through tesserocr, in this process).

`read_words(frames, photometric, palette)` renders each frame as 8-bit grey (colour → luminance
and brightness, palette through its lookup table, monochrome stretched, MONOCHROME1 inverted),
finds text candidates cheaply, and runs Tesseract only on them, each cut out, enlarged and read
as one line. Two finders feed it:

- glyph chains: the connected components of the frame's brightest and of its darkest pixels
  (burned-in text is drawn at full brightness, or dark on a light label) that have a glyph's
  size, linked left to right when they sit on one row at a glyph's distance;
- edge lines: sharp edges (glyph strokes, a label's outline) joined along a row, split at rows
  without edges.

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


BRIGHT = 200  # of 255: a glyph drawn light is at least this bright
DARK = 55  # of 255: a glyph drawn dark is at most this bright
LINE_OFFSET = 1 << 20  # the lines of each finder are numbered apart


def _read_frame(luma: np.ndarray, value: np.ndarray, white: np.ndarray | None) -> list[Read]:
    """The words of one frame: every text candidate read as one line, as the frame shows it;
    and each glyph chain once more with only its ink and the soft edges of its glyphs (text
    straight over a busy image reads only so)."""
    inks = [(_without_rules(value >= BRIGHT), value, 0), (_without_rules(luma <= DARK), luma, 255)]
    if white is not None:
        inks.append((_without_rules(white >= BRIGHT), white, 0))
    chains = [[r for r in _glyph_chains(ink) if _stands_out(r, ink, gray, background)]
              for ink, gray, background in inks]
    reads = [(luma, [r for found in chains for r in found]), (luma, _edge_lines(luma))]
    # light ink alone (dark text is drawn on a label, which the first read sees clean)
    reads += [(_only(ink, gray, background), found)
              for (ink, gray, background), found in zip(inks, chains, strict=True)
              if background == 0]
    found: list[Read] = []
    for n, (gray, regions) in enumerate(reads):
        found += [(line + n * LINE_OFFSET, box, text)
                  for line, box, text in _read_lines(gray, regions)]
    return found


def _stands_out(region: tuple[int, int, int, int], ink: np.ndarray, gray: np.ndarray,
                background: int) -> bool:
    """Whether the ink of a chain stands on a ground of the other kind, as text does: light
    glyphs on a darker ground (`background` 0), dark glyphs on a lighter one (255)."""
    r0, r1, c0, c1 = region
    ground = gray[r0:r1, c0:c1][~ink[r0:r1, c0:c1]]
    if not ground.size:
        return False
    middle = float(np.median(ground))
    return middle < 128 if background == 0 else middle >= 128


GLYPH_HEIGHT = (4, 40)  # pixels: a glyph's height (a line is up to LINE_HEIGHT[1] high)


def _only(ink: np.ndarray, gray: np.ndarray, background: int) -> np.ndarray:
    """`gray` where `ink` is and next to it (the soft edges of its glyphs), `background`
    elsewhere: the text without the image around it."""
    from scipy import ndimage

    near = ndimage.binary_dilation(ink, structure=np.ones((3, 3), dtype=bool))
    return np.where(near, gray, np.uint8(background)).astype(np.uint8)


def _without_rules(ink: np.ndarray) -> np.ndarray:
    """`ink` less its straight lines (a sector's outline, a ruler, a caliper): runs of ink
    longer than any glyph, across or down, that would join the glyphs they touch into one."""
    span = GLYPH_HEIGHT[1] + 1
    across, down = _long_runs(ink, span, 1), _long_runs(ink, span, 0)
    kept = ink & ~across & ~down
    # where a glyph's stroke crosses the line, keep the line's pixels between its two halves
    return kept | (across & _between(kept, 0)) | (down & _between(kept, 1))


def _between(ink: np.ndarray, axis: int, reach: int = 3) -> np.ndarray:
    """Pixels with `ink` at most `reach` pixels before and after them along `axis`."""
    from scipy import ndimage

    u = ink.view(np.uint8)
    before = ndimage.maximum_filter1d(u, reach + 1, axis=axis, origin=reach // 2, mode="constant")
    after = ndimage.maximum_filter1d(u, reach + 1, axis=axis, origin=-(reach + 1) // 2,
                                     mode="constant")
    return (before & after).view(bool)


def _long_runs(ink: np.ndarray, span: int, axis: int) -> np.ndarray:
    """The pixels of `ink` in runs of `span` (odd) or more along `axis`: a morphological
    opening by a line of `span` pixels."""
    from scipy import ndimage

    eroded = ndimage.minimum_filter1d(ink.view(np.uint8), span, axis=axis, mode="constant")
    return ndimage.maximum_filter1d(eroded, span, axis=axis, mode="constant").view(bool)


def _glyph_chains(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of each chain of glyph-sized components of `ink`: neighbours
    on one row (overlapping by half the smaller height, at most three times as tall as each
    other) at most one glyph height apart. A chain of two glyphs or more, wider than high."""
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels, count = ndimage.label(ink, structure=np.ones((3, 3), dtype=bool))  # 8-connected
    if count < 2:
        return []
    boxes = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop)
                      for s in ndimage.find_objects(labels)])
    height, width = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    lo, hi = GLYPH_HEIGHT
    boxes = boxes[(height >= lo) & (height <= hi) & (width <= 3 * height + 4)]
    if len(boxes) < 2 or len(boxes) > MAX_GLYPHS:
        return []  # a frame of noise, not of text: the edge finder still looks at it
    y0, y1, x0, x1 = (boxes[:, i] for i in range(4))
    h = y1 - y0
    gap = x0[None, :] - x1[:, None]
    taller, shorter = np.maximum(h[:, None], h[None, :]), np.minimum(h[:, None], h[None, :])
    overlap = np.minimum(y1[:, None], y1[None, :]) - np.maximum(y0[:, None], y0[None, :])
    # glyphs of a line share its baseline (or, letters with a descender, its x-height)
    slack = np.maximum(1, shorter // 8)
    aligned = (np.abs(y1[:, None] - y1[None, :]) <= slack) | \
        (np.abs(y0[:, None] - y0[None, :]) <= slack)
    link = (gap >= -2) & (gap <= taller) & (2 * overlap >= shorter) & (taller <= 3 * shorter) \
        & aligned
    np.fill_diagonal(link, False)
    i, j = np.nonzero(link)
    graph = coo_matrix((np.ones(i.size), (i, j)), shape=(len(boxes), len(boxes)))
    groups, member = connected_components(graph, directed=False)
    regions = []
    for group in range(groups):
        mine = boxes[member == group]
        if len(mine) >= 2:
            regions += _baselines(mine)
    rows, columns = ink.shape
    return [(max(0, r0), min(rows, r1), max(0, c0), min(columns, c1))
            for r0, r1, c0, c1 in regions]


def _baselines(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The lines of one chain of glyph boxes (row0, row1, col0, col1): its commonest baseline
    first, the glyphs centred on it, cut where they stand more than a glyph apart; then the
    next baseline among the rest (a chain that wandered into the image's speckle around it)."""
    regions = []
    for _ in range(4):
        if len(boxes) < 2:
            break
        bottoms, counts = np.unique(boxes[:, 1], return_counts=True)
        near = [counts[np.abs(bottoms - b) <= 1].sum() for b in bottoms]
        base = int(bottoms[int(np.argmax(near))])
        on = boxes[np.abs(boxes[:, 1] - base) <= 1]
        h = float(np.median(on[:, 1] - on[:, 0]))
        top, bottom = base - 1.3 * h, base + 0.4 * h
        middle = (boxes[:, 0] + boxes[:, 1]) / 2
        line = (middle >= top) & (middle <= bottom)
        kept, boxes = boxes[line], boxes[~line]
        if len(kept) < 2:
            continue
        order = np.argsort(kept[:, 2])
        kept = kept[order]
        start = 0
        for i in range(1, len(kept) + 1):
            if i == len(kept) or kept[i, 2] - kept[:i, 3].max() > 1.5 * h:
                run = kept[start:i]
                r0 = max(int(run[:, 0].min()), int(top))
                r1 = min(int(run[:, 1].max()), int(np.ceil(bottom)))
                c0, c1 = int(run[:, 2].min()), int(run[:, 3].max())
                if len(run) >= 2 and r1 - r0 <= LINE_HEIGHT[1] and c1 - c0 >= 1.5 * (r1 - r0):
                    regions.append((r0 - 2, r1 + 2, c0 - 2, c1 + 2))
                start = i
    return regions


MAX_GLYPHS = 3000  # more glyph-sized components than this in one frame: it is noise
INK_CONTRAST = 48  # of 255: how far a stroke stands from its neighbour
LINE_HEIGHT = (7, 48)  # pixels: the heights of a line of burned-in text looked for
LINE_TARGET = 36  # pixels: the height a line is enlarged to before it is read
BORDER = 10


def _edge_lines(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
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
        if rows.stop - rows.start < lo or cols.stop - cols.start < 2 * lo:
            continue  # too small to hold a line
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


def _read_lines(gray: np.ndarray, regions: list[tuple[int, int, int, int]]) -> list[Read]:
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
