"""Malformed DICOM objects for the fuzz tests, from deterministic seeds.

Each object is a small real file (pydicom's test files) with a unique SOP Instance UID, then
one mutation of its data set (the file meta is left alone, so a sender can still read what it
is): byte flips, truncation, a wrong length, a bogus VR, a huge declared length, or a sequence
nested thousands deep. The same seed always gives the same bytes.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from gateway.dicomio import read_for_deid
from gateway.headerscan import scan_header

# Small objects of different shapes: explicit VR with private groups, implicit VR, nested
# sequences and no pixel data, encapsulated JPEG 2000.
BASES = ("CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "JPEG2000.dcm")
UID_ROOT = "1.2.826.0.1.3680043.8.498.77."
PLACEHOLDER = UID_ROOT + "9" * 20  # replaced by a same-length unique UID in every object
KINDS = ("flip", "truncate", "length", "vr", "huge", "nest")
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
         b"UV"}
_SQ_START = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


@dataclass(frozen=True)
class Base:
    """A base object's bytes, where its data set starts, and its elements' header offsets."""

    name: str
    data: bytes
    start: int
    implicit: bool
    headers: tuple[tuple[int, int, str | None], ...]  # (offset, tag, VR) of each element


def uid(n: int) -> str:
    return UID_ROOT + f"{n:020d}"


def load_bases(folder: Path) -> list[Base]:
    """The base objects, rewritten with the placeholder UID (written once into `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = []
    for name in BASES:
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = PLACEHOLDER
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        parsed, _pos, _size = scan_header(path)
        implicit = parsed.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
        headers = []
        for tag in parsed.keys():
            raw = parsed.get_item(tag)
            if not hasattr(raw, "value_tell"):
                continue
            size = 8 if implicit or raw.VR.encode() not in _LONG else 12
            headers.append((raw.value_tell - size, int(tag), raw.VR))
        start = headers[0][0]
        bases.append(Base(name, data, start, implicit, tuple(headers)))
    return bases


def valid(base: Base, n: int) -> bytes:
    """The base object with its own SOP Instance UID."""
    return base.data.replace(PLACEHOLDER.encode(), uid(n).encode())


def mutate(base: Base, n: int, seed: int) -> tuple[str, bytes]:
    """Object number `n` (its UID), mutated by the kind and place `seed` chooses."""
    rng = random.Random(seed)
    data = bytearray(valid(base, n))
    kind = KINDS[rng.randrange(len(KINDS))]
    offset, tag, vr = base.headers[rng.randrange(len(base.headers))]
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(base.start, len(data))
            data[at] ^= rng.randrange(1, 256)
    elif kind == "truncate":
        del data[rng.randrange(base.start, len(data) - 1):]
    elif kind in ("length", "huge"):
        long = base.implicit or (vr or "").encode() in _LONG
        at, fmt = (offset + (4 if base.implicit else 8), "<I") if long else (offset + 6, "<H")
        (old,) = struct.unpack_from(fmt, data, at)
        if kind == "huge":
            new = rng.choice((0xFFFFFFF0, 0x7FFFFFFF, 0xFFFFFFFE)) if long else 0xFFFF
        else:
            new = max(0, old + rng.choice((-4, -2, -1, 1, 2, 6, 100, -100)))
        struct.pack_into(fmt, data, at, new & (0xFFFFFFFF if long else 0xFFFF))
    elif kind == "vr":
        if base.implicit:  # no VR on the wire: write one where the length is
            data[offset + 4:offset + 6] = rng.choice((b"SQ", b"ZZ", b"OB"))
        else:
            data[offset + 4:offset + 6] = rng.choice(
                (b"ZZ", b"\x00\x00", b"sq", b"SQ", b"UN", b"DA", b"OB", b"@@"))
    else:  # a sequence nested deeper than any real object, before the element chosen
        depth = rng.choice((300, 2000, 10000))
        head = struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF) if base.implicit else \
            struct.pack("<HH2s2xI", 0x0009, 0x1010, b"SQ", 0xFFFFFFFF)
        nested = (head + _SQ_START) * depth + (_ITEM_END + _SEQ_END) * depth
        creator = b"\x09\x00\x10\x00" + (struct.pack("<I", 8) if base.implicit else
                                         b"LO" + struct.pack("<H", 8)) + b"FUZZ NST"
        at = next((o for o, t, _ in base.headers if t > 0x00091010), len(data))
        if any(t >> 16 == 0x0009 for _, t, _ in base.headers):
            at = offset  # the group is taken: nest before the chosen element instead
            creator = b""
        data[at:at] = creator + nested
    return kind, bytes(data)


GENERIC = re.compile(r"\bNone\b|Traceback|worker died|^\w+: *$")


def reason_problems(reason: str) -> list[str]:
    """What is wrong with a quarantine reason: empty, generic, a traceback, a death."""
    return [m.group(0) for m in GENERIC.finditer(reason)] + ([] if reason else ["empty"])


def read_back(paths: list[Path]) -> list[str]:
    """Outputs that pydicom cannot read whole, or whose framing Gantry's reader refuses, or
    that dcmtk's dcmdump cannot parse (when installed)."""
    bad = []
    for path in paths:
        try:
            with warnings.catch_warnings():  # an unknown public tag read as UN is no problem
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                for elem in ds.iterall():
                    _ = elem.value
            read_for_deid(path)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion
            bad.append(f"{path.name}: {type(exc).__name__}")
    if shutil.which("dcmdump") and paths:
        run = subprocess.run(["dcmdump", "-q", *map(str, paths)], capture_output=True)
        if run.returncode:
            bad.append(f"dcmdump: {run.stderr[:500].decode('latin-1')}")
    return bad


def write_corpus(folder: Path, count: int, every_valid: int, seed: int,
                 bases: list) -> dict[Path, str]:
    """`count` objects in `folder`, named `NNNNN-KIND.dcm`: every `every_valid`-th one valid,
    the others one mutation each (seeded from `seed`); path → kind."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[Path, str] = {}
    for i in range(count):
        base = bases[i % len(bases)]
        if i % every_valid == 0:
            kind, data = "valid", valid(base, i)
        else:
            kind, data = mutate(base, i, seed=seed + i)
        path = folder / f"{i:05d}-{kind}.dcm"
        path.write_bytes(data)
        kinds[path] = kind
    return kinds
