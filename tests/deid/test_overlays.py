"""Overlays embedded in the pixel data (a plane in the bits above High Bit, no Overlay Data of
its own): the Basic Profile removes overlay data, so the plane's bits are cleared; the image's
own bits stay as they were. pydicom's CT_small made into a 12-bit image with a "name" drawn in
bit 12, as old MR and CT archives hold them; through the real pipeline, files on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.config import parse_config
from gateway.pipeline import Forwarded, Pipeline

KEY = b"o" * 32
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]


def pipeline(*options: str) -> Pipeline:
    return Pipeline(parse_config({"site_key": {"env": "GANTRY_SITE_KEY"},
                                  "profile": {"options": list(options)}}, "<test>"), KEY)


def with_overlay(tmp_path: Path, syntax, embedded: bool = True) -> tuple[Path, np.ndarray]:
    """CT_small as a 12-bit image; overlay 6000 drawn in bit 12 (embedded) or as its own
    Overlay Data. Returns the file and the image's 12-bit values."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    image = ds.pixel_array.astype(np.uint16) & 0x0FFF
    words = image.copy()
    if embedded:
        words[10:20, 10:60] |= 1 << 12  # the annotation: a name, say
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = words.astype("<u2" if syntax.is_little_endian else ">u2").tobytes()
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16 if embedded else 1)
    ds.add_new(0x60000102, "US", 12 if embedded else 0)
    if not embedded:
        ds.add_new(0x60003000, "OW", np.packbits(np.ones(ds.Rows * ds.Columns, np.uint8),
                                                 bitorder="little").tobytes())
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / "in.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=syntax.is_implicit_VR,
                     little_endian=syntax.is_little_endian, force_encoding=True)
    return path, image


def words_of(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    order = "<" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">"
    return np.frombuffer(ds.PixelData, f"{order}u2").reshape(ds.Rows, ds.Columns)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_an_embedded_overlay_plane_is_cleared(tmp_path, syntax):
    src, image = with_overlay(tmp_path, syntax)
    assert ((words_of(src) >> 12) & 1).sum() == 500  # the plane is there to begin with
    result = pipeline().process(src, tmp_path / "out.dcm")
    assert isinstance(result, Forwarded), getattr(result, "reason", "")
    out = words_of(tmp_path / "out.dcm")
    assert not (out >> 12).any(), "the overlay's plane survived in the pixel words"
    assert np.array_equal(out, image)  # the image itself untouched


def test_clean_graphics_keeps_the_plane_as_it_keeps_overlay_data(tmp_path):
    src, _ = with_overlay(tmp_path, ExplicitVRLittleEndian)
    result = pipeline("Clean Graphics Option").process(src, tmp_path / "out.dcm")
    assert isinstance(result, Forwarded)
    assert np.array_equal(words_of(tmp_path / "out.dcm"), words_of(src))


def test_an_overlay_with_its_own_data_leaves_the_pixels_alone(tmp_path):
    src, image = with_overlay(tmp_path, ExplicitVRLittleEndian, embedded=False)
    result = pipeline().process(src, tmp_path / "out.dcm")
    assert isinstance(result, Forwarded)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert np.array_equal(words_of(tmp_path / "out.dcm"), image)
    assert 0x60003000 not in out  # its data removed, as the Basic Profile says
