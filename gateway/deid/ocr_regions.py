"""Where burned-in text can be in a frame: cheap text candidates for the OCR engine to read.

Two finders give regions (row0, row1, col0, col1), each the place of one line of text:

- glyph chains: the connected components of an ink mask (a frame's brightest, whitest or darkest
  pixels, its straight lines taken out) that have a glyph's size, linked left to right when they
  sit on one baseline a glyph apart, and kept when they stand on a ground of the other kind;
- edge lines: sharp edges (glyph strokes, a label's outline) joined along a row, split at rows
  without edges.
"""

from __future__ import annotations

import numpy as np

BRIGHT = 200  # of 255: a glyph drawn light is at least this bright
DARK = 55  # of 255: a glyph drawn dark is at most this bright
Region = tuple[int, int, int, int]  # row0, row1, col0, col1


def stands_out(region: Region, ink: np.ndarray, gray: np.ndarray, background: int) -> bool:
    """Whether the ink of a chain stands on a ground of the other kind, as text does: light
    glyphs on a darker ground (`background` 0), dark glyphs on a lighter one (255)."""
    r0, r1, c0, c1 = region
    ground = gray[r0:r1, c0:c1][~ink[r0:r1, c0:c1]]
    if not ground.size:
        return False
    middle = float(np.median(ground))
    return middle < 128 if background == 0 else middle >= 128


GLYPH_HEIGHT = (4, 40)  # pixels: a glyph's height (a line is up to LINE_HEIGHT[1] high)


def ink_only(ink: np.ndarray, gray: np.ndarray, background: int) -> np.ndarray:
    """`gray` where `ink` is and next to it (the soft edges of its glyphs), `background`
    elsewhere: the text without the image around it."""
    from scipy import ndimage

    near = ndimage.binary_dilation(ink, structure=np.ones((3, 3), dtype=bool))
    return np.where(near, gray, np.uint8(background)).astype(np.uint8)


def without_rules(ink: np.ndarray) -> np.ndarray:
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


def glyph_chains(ink: np.ndarray) -> list[Region]:
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


def _baselines(boxes: np.ndarray) -> list[Region]:
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


def edge_lines(gray: np.ndarray) -> list[Region]:
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
