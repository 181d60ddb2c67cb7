"""Reading and writing DICOM files fast: parse the header, copy pixel bytes untouched.

Most objects need only their header changed. `read_for_deid` parses everything before the pixel
data and notes where the pixel data element starts and ends; `write` (replacing a file) and
`write_new` (never replacing one) write the new header, those bytes verbatim, then whatever
followed them (Data Set Trailing Padding, a Digital Signatures Sequence), if the profile kept it.
Deflated objects are read whole instead. The header's encoding is `gateway.dicomencode`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import VR

from gateway.deid.tags import tag_str
from gateway.deid.values import stored_text, transfer_syntax
from gateway.dicomencode import encode_file_meta, encode_header  # noqa: F401 - re-exported
from gateway.framing import Malformed, check_sequences, pixel_data_end
from gateway.headerscan import Unusual, scan_header
from gateway.safetext import safe_message, scrub_values

# pydicom's validation warnings quote element values, which may be identifiers: never emit them.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

PIXEL_DATA = 0x7FE00010
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
KNOWN_VRS = frozenset(vr.value for vr in VR)


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
    src = path if isinstance(path, Path) else Path(path)
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
        ts = transfer_syntax(ds)
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


#: Where the kernel cannot copy between the two files, pixel bytes go through memory in
#: pieces of at most this size.
COPY_CHUNK = 16 << 20
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


def _encoded(parsed: Parsed) -> tuple[bytes, bytes]:
    """The bytes written before the copied pixel bytes, and those written after them."""
    ds = parsed.ds
    ts = transfer_syntax(ds)
    if ts in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian):  # pydicom's writer
        out = BytesIO()  # (read_for_deid keeps no element after the pixel data of these)
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        head = out.getvalue()
        if ts == DeflatedExplicitVRLittleEndian and len(head) % 2:
            head += b"\x00"  # the deflated bitstream is padded to even length
        return head, b""
    tags = sorted(ds._dict, key=int)
    after = [t for t in tags if int(t) > PIXEL_DATA] if parsed.tail_stop is not None else []
    head = encode_header(ds, tags[:len(tags) - len(after)])
    return head, encode_header(ds, after, meta=False) if after else b""


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write `parts` to `fd` in order, in as few system calls as the kernel allows."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        if written <= 0:
            raise OSError(errno.EIO, "the file system accepted no bytes")
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def _write_object(fd: int, parsed: Parsed) -> None:
    """The de-identified object into `fd`: the new header, the pixel bytes copied from the
    source in the kernel (copy_file_range; read and written where it cannot), then the elements
    that followed them. A source shorter than when it was read is an error, never a short
    output."""
    head, after = _encoded(parsed)
    if parsed.tail is None:
        _write_all(fd, [head])
        return
    _write_all(fd, [head])
    with open(parsed.src, "rb", buffering=0) as src:
        offset = parsed.tail
        stop = os.fstat(src.fileno()).st_size if parsed.tail_stop is None else parsed.tail_stop
        while offset < stop:
            try:
                sent = os.copy_file_range(src.fileno(), fd, stop - offset, offset)
            except OSError as exc:
                if exc.errno not in _NO_COPY_RANGE:
                    raise
                chunk = os.pread(src.fileno(), min(stop - offset, COPY_CHUNK), offset)
                _write_all(fd, [chunk])
                sent = len(chunk)
            if not sent:
                raise DicomReadError(parsed.src, "the file was shortened while it was "
                                                 "de-identified")
            offset += sent
    _write_all(fd, [after])


def _in_folder(create: Callable[[], int], folder: Path) -> int:
    """`create()` (a file descriptor), creating `folder` first if it does not exist yet."""
    try:
        return create()
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return create()


def temp_name(name: str, pid: int | str) -> str:
    """The name `write` gives the file `name` while process `pid` writes it ('*' globs)."""
    return f".{name}.{pid}.tmp"


def write(parsed: Parsed, dst: str | os.PathLike, fsync: bool = False) -> Path:
    """Write the object to `dst` atomically (temp file + rename), replacing any file there."""
    target = Path(dst)
    tmp = target.with_name(temp_name(target.name, os.getpid()))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = _in_folder(lambda: os.open(tmp, flags, 0o666), target.parent)
    try:
        try:
            _write_object(fd, parsed)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


# Linux: a file with no name until it is whole (O_TMPFILE), then linked under one, so that no
# crash can leave a partial or temporary file behind. Python's os.link calls linkat, which can
# follow the /proc link to the open file, only when it is given a dir_fd.
_ANONYMOUS = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def write_new(parsed: Parsed, names: list[Path]) -> Path:
    """Write the object under the first of `names` (in one folder) that no file has yet, and
    return it: a file is never replaced, and appears whole or not at all. FileExistsError when
    every name is taken."""
    folder = names[0].parent
    if _ANONYMOUS:
        flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
        try:
            fd = _in_folder(lambda: os.open(folder, flags, 0o666), folder)
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE:  # else: a file system without it (NFS)
                raise
        else:
            try:
                _write_object(fd, parsed)
                for name in names:
                    try:  # the dir_fd (any descriptor) makes os.link call linkat
                        os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=fd)
                        return name
                    except FileExistsError:
                        continue
            finally:
                os.close(fd)
            raise FileExistsError(errno.EEXIST, "every name is taken", str(names[-1]))
    tmp = folder / temp_name(names[-1].name, f"{os.getpid()}-{secrets.token_hex(4)}")
    fd = _in_folder(lambda: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), folder)
    try:
        try:
            _write_object(fd, parsed)
        finally:
            os.close(fd)
        for name in names:
            try:
                os.link(tmp, name)
                return name
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "every name is taken", str(names[-1]))
    finally:
        tmp.unlink(missing_ok=True)
