"""Re-encode a de-identified object in an uncompressed syntax a destination accepted.

The bytes that go on the wire must be what their transfer syntax says: compressed pixel data
is decompressed, a deflated object inflated, a big-endian one byte-swapped, and the dataset
written again as Explicit or Implicit VR Little Endian (pydicom converts the element encoding;
the VRs of an implicit object come from the data dictionary, unknown ones become UN). What
cannot be re-encoded truly raises `TranscodeError` with the element and the problem; nothing
is relabelled.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Bytes per word of the "other" VRs whose byte order follows the transfer syntax (PS3.5 7.3).
WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PIXEL_DATA = 0x7FE00010


class TranscodeError(ValueError):
    """The object cannot be re-encoded for the destination (the message names the problem,
    never a value)."""


def transcode(path: Path, accepted: list[str]) -> Dataset:
    """The object in `path`, re-encoded in the first of Explicit / Implicit VR Little Endian
    that is in `accepted`, as a dataset whose original encoding is that syntax."""
    target = next((UID(ts) for ts in TARGETS if ts in accepted), None)
    if target is None:
        raise TranscodeError("no uncompressed little-endian syntax accepted")
    ds = dcmread(path)
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed and PIXEL_DATA in ds:
        # Lossless or not, the object keeps its identity (pydicom would make up a new UID).
        ds.decompress(generate_instance_uid=False)  # → Explicit VR Little Endian
    _decode(ds, swap=not syntax.is_little_endian, bits=int(ds.get("BitsAllocated") or 0))
    ds.file_meta.TransferSyntaxUID = target
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)  # converts implicit <-> explicit VR
    buf.seek(0)
    out = dcmread(buf)
    if out.original_encoding != (target.is_implicit_VR, True):
        raise TranscodeError(f"re-encoded object is not {target.name}")
    return out


def _decode(ds: Dataset, *, swap: bool, bits: int) -> None:
    """Decode every element at every depth (each with the encoding it was read in, so the
    writer encodes values, not bytes), and with `swap` byte-swap from big endian the values
    pydicom keeps as bytes (OW, OF, OL, OD, OV; native pixel data by its cell size). The other
    VRs are decoded values that the writer encodes again in the new byte order. A UN value has
    no known structure, so it cannot be swapped."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _decode(item, swap=swap, bits=bits)
        elif not swap or not elem.value:
            continue
        elif elem.VR == "UN":
            raise TranscodeError(f"big-endian element {elem.tag} has VR UN and cannot be "
                                 "byte-swapped")
        elif elem.VR in WORD_BYTES:
            width = WORD_BYTES[elem.VR]
            if elem.tag == PIXEL_DATA and elem.VR == "OW" and bits > 16:
                width = bits // 8  # pixel cells of 32 or 64 bits, in the syntax's byte order
            if len(elem.value) % width:
                raise TranscodeError(f"element {elem.tag} ({elem.VR}) has a length that is "
                                     f"not a multiple of {width}")
            words = np.frombuffer(elem.value, dtype=f">u{width}")
            elem.value = words.astype(f"<u{width}").tobytes()
