"""Reading and writing DICOM files fast: parse the header, copy pixel bytes untouched.

Most objects need only their header changed. `read_for_deid` parses everything before the pixel
data and notes where the pixel data element starts and ends; `write` writes the new header,
copies those bytes verbatim, then writes whatever followed them (Data Set Trailing Padding, a
Digital Signatures Sequence), if the profile kept it. Deflated objects are read whole instead.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import IS, VR, DSfloat, PersonName

from gateway.deid.tags import tag_str
from gateway.deid.values import stored_text
from gateway.deid.vr import BINARY_VRS, LONG_LENGTH_VRS, STRING_VRS
from gateway.framing import Malformed, check_sequences, pixel_data_end
from gateway.headerscan import Unusual, scan_header
from gateway.safetext import safe_message, scrub_values

# pydicom's validation warnings quote element values, which may be identifiers: never emit them.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}
PIXEL_DATA = 0x7FE00010
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
KNOWN_VRS = frozenset(vr.value for vr in VR)
_LONG_VRS = {vr.encode() for vr in LONG_LENGTH_VRS}


# An OS error with one of these numbers is the machine's state (a full disk, no memory or file
# descriptors left), not the object's: the object waits and is tried again.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE,
                              errno.ENFILE, errno.EAGAIN})


def is_transient(exc: BaseException) -> bool:
    """An OS error that says the machine is short of something, not that the object is bad."""
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def parse_problem(exc: BaseException) -> str:
    """What went wrong parsing an object, in words without values."""
    if isinstance(exc, RecursionError):
        return "sequences nested too deeply to parse"
    if isinstance(exc, OSError):  # with an errno: the system's words; else pydicom's
        return exc.strerror or scrub_values(str(exc)) if exc.errno else scrub_values(str(exc))
    return safe_message(exc)


class DicomReadError(ValueError):
    """A file that is not a readable DICOM object; the message names the file and the problem.
    `kind` heads the quarantine reason."""

    kind = "unreadable"

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


class NotAnObject(DicomReadError):
    """A readable DICOM file that is not a composite object (a DICOMDIR)."""

    kind = "not an object"


@dataclass
class Parsed:
    """A dataset read for de-identification; `tail` is where raw pixel bytes start, if copyable,
    and `tail_stop` where they end when elements follow them (those are in `ds`)."""

    ds: Dataset
    src: Path
    tail: int | None
    tail_stop: int | None = None


def _check_vrs(ds: Dataset, path: str | os.PathLike) -> None:
    """Every undecoded element of `ds` (not its sequences' items) has a VR DICOM defines."""
    for tag in ds.keys():
        raw = ds._dict[tag]  # as read: get_item would decode an element without a value
        if isinstance(raw, RawDataElement) and raw.VR is not None and raw.VR not in KNOWN_VRS:
            raise DicomReadError(path, f"element {tag_str(tag)} has an invalid value "
                                       f"representation")


def _check_meta(ds: Dataset, path: str | os.PathLike) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None or 0x00020010 not in meta._dict:
        raise DicomReadError(path, "no file meta information (0002,0010) Transfer Syntax UID")
    _check_vrs(meta, path)
    if stored_text(meta, 0x00020002) == MEDIA_STORAGE_DIRECTORY:
        raise NotAnObject(path, "a DICOMDIR (Media Storage Directory): the index of a medium, "
                                "whose records name its patients; there is no object to "
                                "de-identify in it")
    for tag, name in ((0x00080016, "(0008,0016) SOP Class UID"),
                      (0x00080018, "(0008,0018) SOP Instance UID")):
        if tag not in ds._dict:  # Type 1 in every IOD: no receiver can store the object
            raise DicomReadError(path, f"missing {name}")


def _not_dicom(path: str | os.PathLike) -> str:
    """Why pydicom found no DICOM file here, in words an operator can act on (pydicom's own
    message suggests `force=True`, an option of its API)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        return "not a DICOM file: the file is empty (0 bytes)"
    if 0 < size < 132:
        return (f"not a DICOM file: {size} bytes, too short for the 128-byte preamble and "
                "'DICM' prefix of a DICOM file (PS3.10 7.1)")
    return ("not a DICOM file: no 'DICM' prefix after the 128-byte preamble and no file meta "
            "information (PS3.10 7.1); a bare dataset without them is not accepted")


def _read(path: str | os.PathLike, **kwargs: object) -> tuple[Dataset, int, int]:
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, **kwargs)
            pos = fh.tell()
            size = os.fstat(fh.fileno()).st_size
    except InvalidDicomError:
        raise DicomReadError(path, _not_dicom(path)) from None
    except OSError as exc:
        if is_transient(exc):
            raise
        verb = "cannot read" if exc.errno else "cannot parse"  # pydicom raises OSError too
        raise DicomReadError(path, f"{verb}: {parse_problem(exc)}") from None
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise DicomReadError(path, f"cannot parse: {parse_problem(exc)}") from None
    _check_meta(ds, path)
    _check_vrs(ds, path)
    for tag in ds.keys():
        raw = ds._dict[tag]  # as read: get_item would decode an element without a value
        if not isinstance(raw, RawDataElement):
            continue
        if raw.value is not None and raw.length != 0xFFFFFFFF and len(raw.value) < raw.length:
            raise DicomReadError(path, f"element {tag_str(tag)} is truncated: it declares "
                                       f"{raw.length} bytes, the file holds {len(raw.value)}")
    return ds, pos, size


def read_header(path: str | os.PathLike) -> Dataset:
    """File meta + every element before the pixel data."""
    return _read(path, stop_before_pixels=True)[0]


def read_full(path: str | os.PathLike) -> Dataset:
    """The whole object, every element loaded (raises DicomReadError)."""
    ds = _read(path)[0]
    try:
        for _ in ds.iterall():
            pass
    except Exception as exc:
        raise DicomReadError(path, f"cannot parse: {parse_problem(exc)}") from None
    return ds


def _checked(ds: Dataset, path: Path) -> Dataset:
    """`ds`, its sequences' framing checked (DicomReadError naming the element if not)."""
    try:
        check_sequences(ds)
    except Malformed as exc:
        raise DicomReadError(path, str(exc)) from None
    return ds


def read_for_deid(path: str | os.PathLike) -> Parsed:
    """The header, and the offset of raw pixel bytes that can be copied as they are."""
    src = Path(path)
    try:
        fh = open(src, "rb")
    except OSError as exc:
        if is_transient(exc):
            raise
        raise DicomReadError(src, f"cannot read: {parse_problem(exc)}") from None
    with fh:
        try:
            ds, pos, size = scan_header(fh)
            _check_meta(ds, src)
        except RecursionError:
            raise DicomReadError(src, parse_problem(RecursionError())) from None
        except (Unusual, OSError):
            ds, pos, size = _read(src, stop_before_pixels=True)
        ts = ds.file_meta.TransferSyntaxUID
        if ts == DeflatedExplicitVRLittleEndian:
            return Parsed(_checked(read_full(src), src), src, None)
        _checked(ds, src)
        if pos >= size:  # no pixel data: the last element must end where the file does
            last = ds._dict[max(ds.keys())] if len(ds) else None
            if (isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF
                    and last.value_tell + last.length < size):
                raise DicomReadError(src, "the file ends inside an element header")
            return Parsed(ds, src, None)
        try:
            end = pixel_data_end(fh, pos, size, ts)
        except Malformed as exc:
            raise DicomReadError(src, f"pixel data element (7FE0,0010): {exc}") from None
        if end == size:
            return Parsed(ds, src, pos)
        after = _trailing(fh, pos, end, size, ts)
    if after is None:
        return Parsed(_checked(read_full(src), src), src, None)
    ds._dict.update(after)
    return Parsed(ds, src, pos, end)


def _trailing(fh: BinaryIO, pos: int, end: int, size: int, ts: str
              ) -> dict[BaseTag, RawDataElement] | None:
    """The elements after a (7FE0,0010) Pixel Data element ending at `end`, undecoded; None
    when they are not plain little-endian elements that all follow it."""
    fh.seek(pos)
    if ts == ExplicitVRBigEndian or fh.read(4) != struct.pack("<HH", 0x7FE0, 0x0010):
        return None
    fh.seek(end)
    try:
        after = read_dataset(fh, ts == ImplicitVRLittleEndian, True, bytelength=size - end)
    except Exception:  # noqa: BLE001 - anything odd: the whole-file reader says what it is
        return None
    elements = {tag: after._dict[tag] for tag in after.keys()}
    if not all(isinstance(e, RawDataElement) and int(tag) > PIXEL_DATA
               and int(tag) >> 16 != 0xFFFE  # a stray item or delimiter: not an element
               and (e.VR is None or e.VR in KNOWN_VRS)
               and (e.length == 0xFFFFFFFF or e.value is not None and len(e.value) == e.length)
               for tag, e in elements.items()):
        return None
    return elements


def load_pixels(parsed: Parsed) -> Dataset:
    """The whole dataset of a Parsed object (for stages that change pixels)."""
    if parsed.tail is None:
        return parsed.ds
    full = read_full(parsed.src)
    for elem in parsed.ds:  # keep what earlier stages did to the header
        full[elem.tag] = elem
    for tag in [t for t in full.keys() if t not in parsed.ds and t < 0x7FE00000]:
        del full[tag]
    full.file_meta = parsed.ds.file_meta
    parsed.ds, parsed.tail, parsed.tail_stop = full, None, None
    return full


def _copy_tail(src: Path, offset: int, stop: int | None, out: BinaryIO) -> None:
    """Append src[offset:stop] to out, in the kernel where it can."""
    out.flush()
    with open(src, "rb") as fh:
        remaining = (os.fstat(fh.fileno()).st_size if stop is None else stop) - offset
        try:
            while remaining > 0:
                sent = os.copy_file_range(fh.fileno(), out.fileno(), remaining, offset)
                if sent == 0:
                    break
                offset, remaining = offset + sent, remaining - sent
            out.seek(0, os.SEEK_END)
            return
        except OSError:
            pass
        fh.seek(offset)
        while remaining > 0:
            chunk = fh.read(min(remaining, 1 << 20))
            if not chunk:
                break
            out.write(chunk)
            remaining -= len(chunk)


_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_PACK_IMPLICIT = struct.Struct("<HHI").pack
_PACK_SHORT = struct.Struct("<HH2sH").pack
_PACK_LONG = struct.Struct("<HH2s2xI").pack


def _plain_bytes(elem: RawDataElement | DataElement, implicit: bool) -> bytes | None:
    """The encoded value when it can be written without pydicom's general writer, else None:
    raw (never decoded, so unchanged) values as they are, ASCII text, numbers, and sequences of
    such items (with defined lengths)."""
    if isinstance(elem, RawDataElement):
        if (elem.is_implicit_VR == implicit and elem.is_little_endian and elem.VR != "SQ"
                and elem.length != 0xFFFFFFFF and elem.value is not None
                and not len(elem.value) % 2):
            return elem.value
        return None
    vr, value = elem.VR, elem.value
    if vr == "SQ":
        return _encode_items(value, implicit) if isinstance(value, Sequence) else None
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


def _encode_items(items: Sequence, implicit: bool) -> bytes | None:
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
    if vr.encode() in _LONG_VRS:
        return _PACK_LONG(group, element, vr.encode(), len(data)) + data
    return _PACK_SHORT(group, element, vr.encode(), len(data)) + data


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
        data = _plain_bytes(elem, False) if tag not in (0x00020000, 0x00020001) else b""
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


def _encode_header(ds: Dataset, tags: list[BaseTag], meta: bool = True) -> bytes:
    """Preamble, file meta (if `meta`) and the elements `tags` of the dataset, little endian
    only. Raw and plain text elements are encoded here; the others go through pydicom's element
    writer."""
    ts = ds.file_meta.TransferSyntaxUID
    implicit = ts == ImplicitVRLittleEndian
    out = DicomBytesIO()
    if meta:
        out.write(_encode_meta(ds.file_meta))
    out.is_little_endian, out.is_implicit_VR = True, implicit
    encodings = ds._character_set
    for tag in tags:  # keys of the element store: no value is decoded
        elem = ds._dict[tag]
        data = _plain_bytes(elem, implicit)
        if data is None:
            write_data_element(out, ds[tag], encodings)
            continue
        out.write(_encode_element(tag, elem.VR, data, implicit))
    return out.getvalue()


def temp_name(name: str, pid: int | str) -> str:
    """The name `write` gives the file `name` while process `pid` writes it ('*' globs)."""
    return f".{name}.{pid}.tmp"


def write(parsed: Parsed, dst: str | os.PathLike, fsync: bool = False) -> Path:
    """Write the dataset to `dst` atomically (temp file + rename), raw pixel bytes appended."""
    target = Path(dst)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temp_name(target.name, os.getpid()))
    try:
        with open(tmp, "wb") as out:
            ts = parsed.ds.file_meta.TransferSyntaxUID
            deflated = ts == DeflatedExplicitVRLittleEndian
            after: list[BaseTag] = []  # elements that follow the copied pixel data
            if deflated or ts == ExplicitVRBigEndian:  # (read_for_deid keeps none after it)
                pydicom.dcmwrite(out, parsed.ds, enforce_file_format=True)
            else:
                tags = sorted(parsed.ds._dict, key=int)
                if parsed.tail_stop is not None:
                    after = [t for t in tags if int(t) > PIXEL_DATA]
                out.write(_encode_header(parsed.ds, tags[:len(tags) - len(after)]))
            if parsed.tail is not None:
                _copy_tail(parsed.src, parsed.tail, parsed.tail_stop, out)
                if after:
                    out.write(_encode_header(parsed.ds, after, meta=False))
            if deflated and out.tell() % 2:
                out.write(b"\x00")  # the deflated bitstream is padded to even length
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
