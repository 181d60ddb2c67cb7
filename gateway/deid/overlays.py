"""Overlays embedded in the pixel data: an overlay group (60xx) without Overlay Data of its own
whose plane is a bit of every pixel word above High Bit (retired in 2004; old archives hold
them, and viewers still draw them). Removing (60xx,3000) leaves such a plane in place, names and
annotations included, so where the profile removes overlay data its bits are cleared too.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from gateway.deid.values import transfer_syntax

OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
BITS_ALLOCATED, HIGH_BIT, PIXEL_DATA = 0x00280100, 0x00280102, 0x7FE00010


def _number(ds: Dataset, tag: int) -> int | None:
    elem = ds.get(tag)
    value = getattr(elem, "value", None)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


def embedded_overlay_bits(ds: Dataset) -> int:
    """The bits of each pixel word that hold embedded overlay planes (0 if none): an overlay
    group with a bit position above High Bit and within Bits Allocated, and no Overlay Data."""
    syntax = transfer_syntax(ds)
    if syntax is None or syntax.is_compressed:
        return 0  # embedded overlays are in native pixel data only
    allocated, high = _number(ds, BITS_ALLOCATED), _number(ds, HIGH_BIT)
    if allocated not in (8, 16, 32) or high is None:
        return 0
    mask = 0
    for group in OVERLAY_GROUPS:
        if group << 16 | 0x0102 not in ds._dict:  # most objects: ds.get would raise and catch
            continue
        position = _number(ds, group << 16 | 0x0102)
        if (position is not None and high < position < allocated
                and (group << 16 | 0x3000) not in ds):
            mask |= 1 << position
    return mask


def clear_bits(ds: Dataset, mask: int) -> None:
    """Clear `mask` in every pixel word of the native Pixel Data of `ds`, in place."""
    if not mask or PIXEL_DATA not in ds:
        return
    allocated = _number(ds, BITS_ALLOCATED)
    order = "<" if transfer_syntax(ds).is_little_endian else ">"
    words = np.frombuffer(ds.PixelData, dtype=f"{order}u{allocated // 8}").copy()
    words &= np.array(~mask & ((1 << allocated) - 1), dtype=words.dtype)
    ds.PixelData = words.tobytes()
