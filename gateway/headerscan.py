"""A fast header reader for the common file: Part 10, little endian, well formed.

It walks the bytes once and stores every element before the pixel data undecoded (pydicom
decodes each on first access, exactly as after its own reader). Anything it does not expect —
no preamble, a meta group whose length is wrong, big endian or deflate, an unknown VR, elements
out of order, a value past the end of the file — raises `Unusual`, and the caller reads the file
with pydicom instead, which also produces the precise error for broken files.
"""

from __future__ import annotations

import os
import struct
from functools import lru_cache
from typing import BinaryIO

from pydicom.charset import convert_encodings
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.deid.tags import INTERNED, interned
from gateway.deid.vr import LONG_LENGTH_VRS

PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
CHUNK = 1 << 16
FIRST = 1 << 13  # most headers fit: the pixel data beyond is not read
_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                 b"TM UC UI UL UN UR US UT UV".split())
_LONG = frozenset(vr.encode() for vr in LONG_LENGTH_VRS)
_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHI").unpack_from
_LENGTH = struct.Struct("<I").unpack_from
_VR_NAMES = {vr: vr.decode() for vr in _VRS}
# RawDataElement(...) without its generated __new__: the same tuple, one call less per element
# (all nine fields: pydicom reads is_raw and is_buffered, and _replace()s raw elements)
_raw = tuple.__new__


class Unusual(Exception):
    """The file is not the common case: read it with pydicom."""


class _Bytes:
    """The file's bytes from its start, read in chunks as far as the parse needs them."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size = fh, size
        self.data = fh.read(FIRST)

    def need(self, end: int) -> bytes:
        if end > len(self.data):
            if end > self.size:
                raise Unusual("past the end of the file")
            self.data += self.fh.read(max(end - len(self.data), CHUNK))
            if len(self.data) < end:
                raise Unusual("short read")
        return self.data


def _header(buf: _Bytes, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """Tag, VR (None when implicit), value length and header size of the element at `pos`."""
    data = buf.need(pos + 8)
    if implicit:
        group, element, length = _IMPLICIT(data, pos)
        return group << 16 | element, None, length, 8
    group, element, vr, length = _EXPLICIT(data, pos)
    if vr not in _VRS:
        raise Unusual("unknown VR")
    if vr in _LONG:
        return group << 16 | element, vr.decode(), _LENGTH(buf.need(pos + 12), pos + 8)[0], 12
    return group << 16 | element, vr.decode(), length, 8


def _sequence_end(buf: _Bytes, pos: int, implicit: bool) -> tuple[int, int]:
    """Where the items of an undefined-length value starting at `pos` end, and where the
    element ends (after its sequence delimiter)."""
    while True:
        group, element, length = _IMPLICIT(buf.need(pos + 8), pos)
        tag = group << 16 | element
        if tag == SEQUENCE_END:
            return pos, pos + 8
        if tag != ITEM:
            raise Unusual("not an item")
        if length != UNDEFINED:
            pos += 8 + length
            buf.need(pos)
            continue
        pos += 8
        while True:  # the elements of an undefined-length item, up to its delimiter
            group, element, _ = _IMPLICIT(buf.need(pos + 8), pos)
            if group << 16 | element == ITEM_END:
                pos += 8
                break
            tag, vr, length, size = _header(buf, pos, implicit)
            if length == UNDEFINED:
                pos = _sequence_end(buf, pos + size, implicit or vr == "UN")[1]
            else:
                pos += size + length
                buf.need(pos)


def _elements(buf: _Bytes, pos: int, implicit: bool, group2: bool
              ) -> tuple[dict[BaseTag, RawDataElement], int]:
    """The elements from `pos`: the file meta group (`group2`), or the dataset up to its pixel
    data. Returns them and where they stop. (The loop reads headers straight from the buffer:
    it runs for every element of every object.)"""
    found: dict[BaseTag, RawDataElement] = {}
    last = -1
    size = buf.size
    data = buf.data
    tags = INTERNED
    while pos < size:
        if pos + 12 > len(data):
            data = buf.need(min(pos + 12, size))
            if pos + 8 > len(data):
                raise Unusual("past the end of the file")
        if implicit:
            group, element, length = _IMPLICIT(data, pos)
            vr, start = None, pos + 8
        else:
            group, element, raw_vr, length = _EXPLICIT(data, pos)
            vr = _VR_NAMES.get(raw_vr)
            start = pos + 8
        if group2 != (group == 0x0002):
            if group2:
                break
            raise Unusual("file meta element in the dataset")
        tag = group << 16 | element
        if not group2 and tag in PIXEL_TAGS:
            break
        if tag <= last or group == 0xFFFE:
            raise Unusual("elements out of order")
        last = tag
        if not implicit:
            if vr is None:
                raise Unusual("unknown VR")
            if raw_vr in _LONG:
                if pos + 12 > len(data):
                    raise Unusual("past the end of the file")
                length, start = _LENGTH(data, pos + 8)[0], pos + 12
        if length == UNDEFINED:
            if vr not in (None, "SQ"):
                raise Unusual("undefined length")
            if vr is None and _IMPLICIT(buf.need(start + 8), start)[:2] != (0xFFFE, 0xE000):
                raise Unusual("undefined length")
            end, pos = _sequence_end(buf, start, implicit)  # the value: its items
            data = buf.data
            vr = "SQ"
        else:
            end = pos = start + length
        if end > len(data):
            data = buf.need(end)
        value = data[start:end] if length else empty_value_for_VR(vr, raw=True)
        key = tags.get(tag) or interned(tag)
        found[key] = _raw(RawDataElement,
                          (key, vr, length, value, start, implicit, True, True, False))
    return found, pos


@lru_cache(maxsize=64)
def _syntax(value: bytes) -> tuple[UID, bool]:
    """The transfer syntax a (0002,0010) value names, and whether it is implicit VR; Unusual
    unless it is one this reader parses (little endian, not deflated)."""
    ts = UID(value.decode("ascii", "replace").strip("\x00 "))
    if (not ts.is_transfer_syntax or ts.is_private or not ts.is_little_endian
            or ts == DeflatedExplicitVRLittleEndian):
        raise Unusual("encoding")
    return ts, ts == ImplicitVRLittleEndian


def scan_header(source: str | os.PathLike | BinaryIO) -> tuple[Dataset, int, int]:
    """The dataset up to its pixel data (elements undecoded), where it stops and the file size.
    `source` is a path or a binary file open at its start."""
    if not hasattr(source, "read"):
        with open(source, "rb") as fh:
            return scan_header(fh)
    fh = source
    size = os.fstat(fh.fileno()).st_size
    buf = _Bytes(fh, size)
    if buf.need(144)[128:132] != b"DICM":
        raise Unusual("no preamble")
    meta, pos = _elements(buf, 132, False, True)
    if 0x00020000 not in meta or 0x00020010 not in meta:
        raise Unusual("meta incomplete")
    if 132 + 12 + struct.unpack("<I", meta[BaseTag(0x00020000)].value)[0] != pos:
        raise Unusual("meta group length")
    ts, implicit = _syntax(meta[BaseTag(0x00020010)].value)
    if implicit and pos + 6 <= size and buf.need(pos + 6)[pos + 4:pos + 6] in _VRS:
        raise Unusual("explicit VR under an implicit transfer syntax")
    found, pos = _elements(buf, pos, implicit, False)
    ds = Dataset(found)
    meta[BaseTag(0x00020010)] = DataElement(BaseTag(0x00020010), "UI", ts)  # decoded already
    ds.file_meta = FileMetaDataset(meta)
    charset = found.get(BaseTag(0x00080005))
    encoding = convert_encodings(convert_raw_data_element(charset).value) if charset else "iso8859"
    ds.set_original_encoding(implicit, True, encoding)
    return ds, pos, size
