"""Re-encoding for a destination that accepts only uncompressed little-endian syntaxes: the
values and pixels survive, the bytes are what the transfer syntax says (pydicom's test files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from gateway.net.transcode import TranscodeError, transcode

IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("name", [
    "MR_small_bigendian.dcm",           # 16-bit OW pixels
    "rtdose_expb_1frame.dcm",           # 32-bit pixel cells in OW: swapped by 4, not by 2
    "SC_rgb_small_odd_big_endian.dcm",  # 8-bit pixels in OW, odd size
    "OBXXXX1A_expb.dcm",                # palette colour: OW LUT data in big endian
    "JPEG-LL.dcm",                      # compressed
    "image_dfl.dcm",                    # deflated
])
@pytest.mark.parametrize("target", [IMPLICIT, EXPLICIT])
def test_re_encoded_pixels_and_identity_are_the_originals(name, target):
    src = dcmread(get_testdata_file(name))
    out = transcode(Path(get_testdata_file(name)), [target])
    assert out.file_meta.TransferSyntaxUID == target
    assert out.original_encoding == (target == IMPLICIT, True)
    assert out.SOPInstanceUID == src.SOPInstanceUID
    assert np.array_equal(out.pixel_array, src.pixel_array)
    if "RedPaletteColorLookupTableData" in src:
        red = np.frombuffer(out.RedPaletteColorLookupTableData, "<u2")
        assert np.array_equal(red, np.frombuffer(src.RedPaletteColorLookupTableData, ">u2"))


def test_no_uncompressed_little_endian_syntax_is_refused():
    with pytest.raises(TranscodeError, match="no uncompressed little-endian syntax"):
        transcode(Path(get_testdata_file("CT_small.dcm")), ["1.2.840.10008.1.2.2"])


def test_a_big_endian_value_of_odd_length_for_its_vr_is_refused(tmp_path):
    ds = dcmread(get_testdata_file("MR_small_bigendian.dcm"))
    ds.add_new(0x00091002, "OL", b"\x01\x02\x03\x04\x05\x06")  # 6 bytes: not whole longs
    ds.save_as(tmp_path / "odd.dcm")
    with pytest.raises(TranscodeError, match=r"element \(0009,1002\) \(OL\) has a length"):
        transcode(tmp_path / "odd.dcm", [IMPLICIT])
