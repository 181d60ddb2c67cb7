"""The framing of a data set, checked before anything is de-identified or forwarded.

pydicom reads broken files leniently (a sequence whose length runs into the next elements, an
item tag where an element should be) and would write what it made of them. Gantry refuses
them instead, saying where: every sequence must be a run of items that fill it exactly, every
item a run of ordered elements with known VRs that fill it exactly, nesting at most
`MAX_NESTING` deep, and pixel data framed as its transfer syntax requires.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from pydicom.uid import ImplicitVRLittleEndian as _IMPLICIT

from gateway.deid.tags import tag_str
from gateway.deid.vr import LONG_LENGTH_VRS

MAX_NESTING = 64  # sequences within sequences; real objects (SR included) stay far below
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
PIXEL_DATA = 0x7FE00010
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV "
                 b"TM UC UI UL UN UR US UT UV".split())
_LONG = frozenset(vr.encode() for vr in LONG_LENGTH_VRS)


class Malformed(Exception):
    """What is wrong with the framing, and where."""


def check_sequences(ds: Dataset, where: str = "", depth: int = 0) -> None:
    """Raise `Malformed` naming the element when a sequence of `ds` is not framed as PS3.5 7.5
    requires: undecoded ones are walked byte by byte; ones pydicom has parsed already (it
    parses undefined-length sequences as it reads) are checked item by item."""
    if depth > MAX_NESTING:
        raise Malformed(f"{where.split('[')[0]}: sequences nested deeper than {MAX_NESTING} "
                        f"levels")

    def name(tag: int) -> str:  # only when there is something to say: this loop is hot
        return f"{where}.{tag_str(tag)}" if where else tag_str(tag)

    for tag, elem in ds._dict.items():
        if tag >> 16 == 0xFFFE:
            raise Malformed(f"{name(tag)}: an item or delimiter tag where an element should be")
        if isinstance(elem, RawDataElement):
            vr = elem.VR
            if elem.value is not None and (vr == "SQ" or vr in (None, "UN")
                                           and _is_sequence(tag, vr, elem.length)):
                implicit = elem.is_implicit_VR or vr == "UN"
                walker = _Walker(elem.value, implicit, elem.is_little_endian)
                walker.items(0, len(elem.value), name(tag), depth + 1)
        elif elem.VR == "SQ" and isinstance(elem.value, Sequence):
            for i, item in enumerate(elem.value):
                check_sequences(item, f"{name(tag)}[{i}]", depth + 1)


def _is_sequence(tag: int, vr: str | None, length: int) -> bool:
    """An element without an explicit SQ that is one all the same: undefined length in
    implicit VR or as UN (PS3.5 6.2.2), or a sequence in the dictionary, in implicit VR."""
    if vr not in (None, "UN"):
        return False
    if length == UNDEFINED:
        return True
    if vr is None:
        entry = DicomDictionary.get(tag)
        return entry is not None and entry[0] == "SQ"
    return False


class _Walker:
    """Walks the bytes of one sequence value."""

    def __init__(self, data: bytes, implicit: bool, little: bool) -> None:
        self.data, self.implicit, self.little = data, implicit, little
        self.unpack = struct.Struct("<HHI" if little else ">HHI").unpack_from
        self.short = struct.Struct("<H" if little else ">H").unpack_from
        self.long = struct.Struct("<I" if little else ">I").unpack_from

    def items(self, pos: int, end: int | None, where: str, depth: int,
              limit: int | None = None) -> int:
        """The items from `pos`, up to `end` or (when `end` is None) the sequence delimiter,
        which must come before `limit`; returns where they stop."""
        if depth > MAX_NESTING:
            raise Malformed(f"{where.split('[')[0]}: sequences nested deeper than {MAX_NESTING} "
                            f"levels")
        limit = end if end is not None else len(self.data) if limit is None else limit
        n = 0
        while end is None or pos < end:
            if pos + 8 > limit:
                raise Malformed(f"{where}: the sequence ends inside an item header")
            group, element, length = self.unpack(self.data, pos)
            tag = group << 16 | element
            if tag == SEQUENCE_END:
                if end is not None and pos + 8 != end:
                    raise Malformed(f"{where}: data after the sequence delimiter")
                return pos + 8
            if tag != ITEM:
                raise Malformed(f"{where}: {tag_str(tag)} where an item should be")
            pos += 8
            item = f"{where}[{n}]"
            if length == UNDEFINED:
                pos = self.elements(pos, None, limit, item, depth)
            elif pos + length > limit:
                raise Malformed(f"{item}: declares {length} bytes, the sequence holds "
                                f"{limit - pos}")
            else:
                pos = self.elements(pos, pos + length, limit, item, depth)
            n += 1
        return pos

    def elements(self, pos: int, end: int | None, limit: int, where: str, depth: int) -> int:
        """The elements of an item from `pos`, up to `end` or its item delimiter."""
        last = -1
        bound = limit if end is None else end
        while end is None or pos < end:
            if pos + 8 > bound:
                raise Malformed(f"{where}: the item ends inside an element header")
            group, element, length = self.unpack(self.data, pos)
            tag = group << 16 | element
            if tag == ITEM_END and end is None:
                return pos + 8
            if group == 0xFFFE:
                raise Malformed(f"{where}.{tag_str(tag)}: an item or delimiter tag where an "
                                f"element should be")
            if tag <= last:
                raise Malformed(f"{where}.{tag_str(tag)}: out of order")
            last = tag
            vr: bytes | None = None
            start = pos + 8
            if not self.implicit:
                vr = self.data[pos + 4:pos + 6]
                if vr not in _VRS:
                    raise Malformed(f"{where}.{tag_str(tag)}: an invalid value representation")
                if vr in _LONG:
                    if pos + 12 > bound:
                        raise Malformed(f"{where}.{tag_str(tag)}: the item ends inside its header")
                    length, start = self.long(self.data, pos + 8)[0], pos + 12
                else:
                    length = self.short(self.data, pos + 6)[0]
            text_vr = vr.decode() if vr else None
            if length == UNDEFINED:
                if text_vr not in (None, "SQ", "UN"):
                    raise Malformed(f"{where}.{tag_str(tag)}: undefined length on a {text_vr} "
                                    f"element")
                inner = _Walker(self.data, self.implicit or text_vr == "UN", self.little)
                pos = inner.items(start, None, f"{where}.{tag_str(tag)}", depth + 1,
                                  bound)
                continue
            if start + length > bound:
                raise Malformed(f"{where}.{tag_str(tag)}: declares {length} bytes, the item holds "
                                f"{bound - start}")
            if text_vr == "SQ" or text_vr in (None, "UN") and _is_sequence(tag, text_vr,
                                                                             length):
                self.items(start, start + length, f"{where}.{tag_str(tag)}", depth + 1)
            pos = start + length
        if pos != end:
            raise Malformed(f"{where}: its last element runs past the item's end")
        return pos


def pixel_data_end(fh: BinaryIO, pos: int, size: int, ts: UID) -> int:
    """End offset of the pixel element starting at `pos`; raises `Malformed` (the problem)
    when its framing is not what its transfer syntax requires: a defined length that fits the
    file for native pixel data, items closed by a sequence delimiter for encapsulated."""
    fmt = ">" if ts == ExplicitVRBigEndian else "<"
    fh.seek(pos)
    head = fh.read(12)
    if len(head) < 8:
        raise Malformed("the file ends inside its header")
    group, elem = struct.unpack(fmt + "HH", head[:4])
    if ((group << 16) | elem) not in PIXEL_TAGS:
        raise Malformed("an element out of order where the pixel data should start")
    if ts == _IMPLICIT:
        length, start = struct.unpack("<I", head[4:8])[0], pos + 8
    elif head[4:6] in _LONG:
        if len(head) < 12:
            raise Malformed("the file ends inside its header")
        length, start = struct.unpack(fmt + "I", head[8:12])[0], pos + 12
    else:
        length, start = struct.unpack(fmt + "H", head[6:8])[0], pos + 8
    # None: a syntax pydicom does not know (private): either framing is taken
    encapsulated = ts.is_encapsulated if ts.is_transfer_syntax and not ts.is_private else None
    if ts == DeflatedExplicitVRLittleEndian:
        encapsulated = False
    if length != UNDEFINED:
        if encapsulated and (group << 16 | elem) == PIXEL_DATA:
            raise Malformed(f"native (defined length {length}) under the compressed transfer "
                            f"syntax {ts.name}, which needs encapsulated fragments")
        if start + length > size:
            raise Malformed(f"truncated: it declares {length} bytes, the file holds "
                            f"{max(0, size - start)}")
        return start + length
    if encapsulated is False:
        raise Malformed(f"encapsulated (undefined length) under the native transfer syntax "
                        f"{ts.name}")
    at = start  # encapsulated: items up to the sequence delimiter
    while at + 8 <= size:
        fh.seek(at)
        group, elem, item_len = struct.unpack("<HHI", fh.read(8))
        at += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            return at
        if (group, elem) != (0xFFFE, 0xE000):
            raise Malformed(f"fragment list broken at byte {at - 8}: ({group:04X},{elem:04X}) "
                            f"where an item or the sequence delimiter should be")
        if item_len == UNDEFINED:
            raise Malformed(f"a fragment of undefined length at byte {at - 8}")
        at += item_len
    raise Malformed("encapsulated fragments without their sequence delimiter: the file is "
                    "truncated")
