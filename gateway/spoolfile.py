"""The spool file: an object as the receiver got it, and the durable record of its job.

`spool/<job id>.dcm` is a DICOM file: the 128-byte preamble, "DICM", a File Meta group that
carries everything the job's row holds (SOP class and instance, transfer syntax, the calling and
called AE titles, the caller's address), then the data set exactly as received. The preamble
(free for the application's use, PS3.10 7.1) holds a mark and the file's full length, so a file
that a crash or power loss cut short is told from a whole one by its size alone.

The receiver fsyncs this file before it answers Success and commits the job's row without
waiting for the disk; a restart re-creates the row of any whole spool file that has none
(`job_fields`), and never one from a file cut short. The length check relies on what ext4
(data=ordered, the default), XFS and btrfs guarantee: a file's size on disk never covers data
that did not reach it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from gateway.deid.keyed import keyed_hash
from gateway.dicomio import encode_file_meta

MARK = b"GANTRY-SPOOL-1\x00\x00"  # then the file's length, 8 bytes little endian
PREAMBLE = 128
IMPLEMENTATION_VERSION = "GANTRY_01"
SOURCE_AE, SENDING_AE, RECEIVING_AE = 0x00020016, 0x00020017, 0x00020018
SENDING_ADDRESS = 0x00020027


def sop_hash(key: bytes, sop_instance_uid: str) -> str:
    """The keyed hash of an original SOP Instance UID kept in the audit (never the UID);
    the same value as the pipeline's `Forwarded.original_sop_hash` and the batch audit."""
    return keyed_hash(key, sop_instance_uid, 32)


def header(size: int, sop_class: str, sop_uid: str, ts: str, calling: str, called: str,
           peer: str) -> bytes:
    """Preamble (mark and length of the whole file), "DICM" and the File Meta group of a spool
    file whose data set is `size` bytes long."""
    meta: dict[int, tuple[str, str | bytes]] = {
        0x00020002: ("UI", sop_class), 0x00020003: ("UI", sop_uid), 0x00020010: ("UI", ts),
        0x00020012: ("UI", PYDICOM_IMPLEMENTATION_UID),
        0x00020013: ("SH", IMPLEMENTATION_VERSION),
    }
    if calling:
        meta[SOURCE_AE] = meta[SENDING_AE] = ("AE", calling)
    if called:
        meta[RECEIVING_AE] = ("AE", called)
    if peer:
        meta[SENDING_ADDRESS] = ("UR", peer)
    head = encode_file_meta(meta)[PREAMBLE:]
    total = PREAMBLE + len(head) + size
    return (MARK + struct.pack("<Q", total)).ljust(PREAMBLE, b"\x00") + head


def write(path: Path, head: bytes, data: bytes) -> int:
    """Create `path` (never over another file) with `head` then `data`; returns the open
    descriptor, not yet fsync'd (fsync of a new file on ext4/XFS persists its directory entry
    too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, head)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except BaseException:
        os.close(fd)
        raise
    return fd


def cut_short(path: Path) -> str | None:
    """Why a spool file is not whole ("N of M bytes"), or None: whole, or written by a version
    that did not mark its spool files (nothing to check)."""
    with open(path, "rb") as fh:
        preamble = fh.read(PREAMBLE)
        size = os.fstat(fh.fileno()).st_size
    if not preamble.startswith(MARK) or len(preamble) < len(MARK) + 8:
        return None
    (total,) = struct.unpack_from("<Q", preamble, len(MARK))
    return None if size == total else f"{size} of {total} bytes"


def is_marked(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(MARK)) == MARK


def job_fields(path: Path, key: bytes) -> dict[str, Any] | None:
    """The job row's fields of a whole, marked spool file, from its File Meta group; None for
    a file cut short, unmarked or unreadable."""
    try:
        if not is_marked(path) or cut_short(path) is not None:
            return None
        meta = read_file_meta_info(path)
        head = PREAMBLE + 4 + 12 + int(meta[0x00020000].value)  # "DICM", the group length
        return {
            "calling_ae": _text(meta, SOURCE_AE).strip(),
            "called_ae": _text(meta, RECEIVING_AE).strip(),
            "peer": _text(meta, SENDING_ADDRESS),
            "sop_hash": sop_hash(key, str(meta.MediaStorageSOPInstanceUID)),
            "sop_class_uid": str(meta.MediaStorageSOPClassUID),
            "transfer_syntax": str(meta.TransferSyntaxUID),
            "size": path.stat().st_size - head,
        }
    except (OSError, ValueError, KeyError, AttributeError, InvalidDicomError):
        return None


def _text(meta: Any, tag: int) -> str:
    return str(meta[tag].value or "") if tag in meta else ""
