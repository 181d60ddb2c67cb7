"""Encoding a dataset's header to bytes, fast: values never decoded (raw) are written as they
were read, new ASCII text and numbers are packed here, and only what needs it goes through
pydicom's element writer. Little endian only; no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ImplicitVRLittleEndian
from pydicom.valuerep import IS, DSfloat, PersonName

from gateway.deid.values import transfer_syntax
from gateway.deid.vr import BINARY_VRS, LONG_LENGTH_VRS, STRING_VRS

PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_PACK_IMPLICIT = struct.Struct("<HHI").pack
_PACK_SHORT = struct.Struct("<HH2sH").pack
_PACK_LONG = struct.Struct("<HH2s2xI").pack


def _plain_bytes(elem: RawDataElement | DataElement, implicit: bool) -> bytes | None:
    """The encoded value when it can be written without pydicom's general writer, else None:
    raw (never decoded, so unchanged) values as they are, ASCII text, numbers, and sequences of
    such items (with defined lengths)."""
    if isinstance(elem, RawDataElement):  # a sequence's value: its items, as they were read
        if (elem.is_implicit_VR == implicit and elem.is_little_endian
                and elem.length != 0xFFFFFFFF and elem.value is not None
                and not len(elem.value) % 2):
            return elem.value
        return None
    vr, value = elem.VR, elem.value
    if vr == "SQ":
        return encode_items(value, implicit) if isinstance(value, Sequence) else None
    if value is None or value == "":
        return b"" if vr in STRING_VRS or vr in _NUMBER_FORMATS else None
    if isinstance(value, bytes):  # pixel data may be encapsulated: pydicom's writer knows
        return (value if vr in BINARY_VRS and not len(value) % 2
                and elem.tag not in PIXEL_TAGS and not elem.is_undefined_length else None)
    parts = list(value) if isinstance(value, MultiValue | list) else [value]
    if vr in _NUMBER_FORMATS:
        try:
            return struct.pack("<" + _NUMBER_FORMATS[vr] * len(parts), *parts)
        except struct.error:
            return None
    if vr in ("DS", "IS"):
        if not all(isinstance(p, str | DSfloat | IS) for p in parts):
            return None
    elif vr not in STRING_VRS or not all(isinstance(p, str | PersonName)
                                         for p in parts):
        return None
    text = "\\".join(str(p) for p in parts)
    if not text.isascii():
        return None
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if elem.VR == "UI" else b" "
    return data


def encode_items(items: Iterable[Dataset], implicit: bool) -> bytes | None:
    """A sequence's items, each with its length, or None when an element needs pydicom."""
    out = []
    for item in items:
        body = []
        for tag in sorted(item._dict, key=int):
            elem = item._dict[tag]
            data = _plain_bytes(elem, implicit)
            if data is None:
                return None
            body.append(_encode_element(tag, elem.VR, data, implicit))
        encoded = b"".join(body)
        out.append(_PACK_IMPLICIT(0xFFFE, 0xE000, len(encoded)) + encoded)
    return b"".join(out)


def _encode_element(tag: int, vr: str, data: bytes, implicit: bool) -> bytes:
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _PACK_IMPLICIT(group, element, len(data)) + data
    pack = _PACK_LONG if vr in LONG_LENGTH_VRS else _PACK_SHORT
    return pack(group, element, vr.encode(), len(data)) + data


def encode_file_meta(elements: dict[int, tuple[str, str | bytes]]) -> bytes:
    """Preamble, "DICM" and a file meta group (explicit VR little endian, with its group length
    and version) from tag → (VR, value); ASCII text values are padded to even length."""
    body = []
    for tag, (vr, value) in sorted({**elements, 0x00020001: ("OB", b"\x00\x01")}.items()):
        data = value if isinstance(value, bytes) else value.encode("ascii", "replace")
        if len(data) % 2:
            data += b"\x00" if vr in ("UI", "OB") else b" "
        body.append(_encode_element(tag, vr, data, False))
    rest = b"".join(body)
    group_length = _encode_element(0x00020000, "UL", struct.pack("<I", len(rest)), False)
    return b"\x00" * 128 + b"DICM" + group_length + rest


def _encode_meta(meta: Dataset) -> bytes:
    """Preamble and file meta information of a dataset's `file_meta`."""
    elements: dict[int, tuple[str, str | bytes]] = {}
    for tag, elem in meta._dict.items():
        data = _plain_bytes(elem, False) if int(tag) not in (0x00020000, 0x00020001) else b""
        if data is None:  # a value only pydicom's writer knows how to encode
            meta.FileMetaInformationVersion = b"\x00\x01"
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, False
            out.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(out, meta, enforce_standard=True)
            return out.getvalue()
        elements[int(tag)] = (elem.VR, data)
    elements.pop(0x00020000, None)  # the group length and the version: encode_file_meta
    elements.pop(0x00020001, None)  # writes both
    return encode_file_meta(elements)


def encode_header(ds: Dataset, tags: list[BaseTag], meta: bool = True) -> bytes:
    """Preamble, file meta (if `meta`) and the elements `tags` of the dataset, little endian
    only. Raw and plain text elements are encoded here; the others go through pydicom's element
    writer."""
    implicit = transfer_syntax(ds) == ImplicitVRLittleEndian
    parts = [_encode_meta(ds.file_meta)] if meta else []
    store = ds._dict
    for tag in tags:  # keys of the element store: no value is decoded
        elem = store[tag]
        data = _plain_bytes(elem, implicit)
        if data is None:
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, implicit
            write_data_element(out, ds[tag], ds._character_set)
            parts.append(out.getvalue())
            continue
        parts.append(_encode_element(tag, elem.VR, data, implicit))
    return b"".join(parts)
