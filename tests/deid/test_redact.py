"""Pixel redaction on real files of every transfer-syntax family, and the burned-in policy.

For each file: (where we can re-encode the input losslessly) burn a known pattern into a
region, redact it, write and re-read the object, decode — the region is one constant colour and
every other pixel equals the decoded input. Lossy and JPEG-process inputs (which we cannot
re-encode the same way) are compared decoded-before against decoded-after.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import compress, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from gateway.config import RedactionConfig, RedactionRuleConfig
from gateway.deid.redact import (
    Decision,
    RedactionError,
    Redactor,
    clip_regions,
    fill_value,
    redact_pixels,
)

try:
    import data_store

    DATA_STORE: Path | None = Path(data_store.__file__).parent / "data"
except ImportError:  # pragma: no cover
    DATA_STORE = None


def data_file(name: str) -> Path:
    if DATA_STORE is not None and (DATA_STORE / name).exists():
        return DATA_STORE / name
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"test file {name} is not available")
    return Path(path)


# file -> family (all from pydicom's test files or pydicom-data)
FILES = {
    # native
    "CT_small.dcm": "native 16-bit signed",
    "MR_small_implicit.dcm": "native implicit VR",
    "MR_small_bigendian.dcm": "native big endian",
    "image_dfl.dcm": "native deflated",
    "SC_rgb.dcm": "native RGB",
    "SC_rgb_16bit_2frame.dcm": "native RGB 16-bit multi-frame",
    "SC_ybr_full_uncompressed.dcm": "native YBR_FULL",
    "SC_ybr_full_422_uncompressed.dcm": "native YBR_FULL_422",
    "OBXXXX1A_2frame.dcm": "native palette multi-frame",
    "gdcm-US-ALOKA-16.dcm": "native palette 16-bit",
    "emri_small.dcm": "native multi-frame 12-bit",
    "liver.dcm": "native 1-bit multi-frame",
    "rtdose.dcm": "native 32-bit multi-frame",
    "US1_UNCR.dcm": "native RGB ultrasound",
    "color-pl.dcm": "native RGB planar configuration 1",
    # RLE
    "MR_small_RLE.dcm": "RLE signed",
    "SC_rgb_rle_2frame.dcm": "RLE RGB multi-frame",
    "emri_small_RLE.dcm": "RLE multi-frame",
    "OBXXXX1A_rle.dcm": "RLE palette",
    # JPEG baseline (lossy)
    "SC_jpeg_no_color_transform.dcm": "JPEG baseline RGB",
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG baseline YBR_FULL",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "JPEG baseline YBR_FULL_422",
    "examples_ybr_color.dcm": "JPEG baseline YBR_FULL_422 30 frames",
    # JPEG extended (lossy), JPEG lossless
    "JPGExtended.dcm": "JPEG extended 12-bit",
    "JPEG-LL.dcm": "JPEG lossless signed",
    "JPGLosslessP14SV1_1s_1f_8b.dcm": "JPEG lossless SV1",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG lossless RGB",
    # JPEG-LS
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless",
    "emri_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless multi-frame",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS near-lossless",
    "SC_rgb_jls_lossy_line.dcm": "JPEG-LS near-lossless RGB",
    # JPEG 2000
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
    "US1_J2KR.dcm": "JPEG 2000 lossless YBR_RCT",
    "emri_small_jpeg_2k_lossless.dcm": "JPEG 2000 lossless multi-frame",
    "US1_J2KI.dcm": "JPEG 2000 lossy YBR_ICT",
    "693_J2KI.dcm": "JPEG 2000 lossy signed",
}

NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
          UID("1.2.840.10008.1.2.1.99")}
REENCODE = {RLELossless: RLELossless, JPEGLSLossless: JPEGLSLossless,
            JPEG2000Lossless: JPEG2000Lossless}


def raw(ds: Dataset) -> tuple[np.ndarray, dict]:
    """Decoded samples, shaped (frames, rows, columns, samples): as stored, except that
    YBR_FULL_422 is converted to RGB the way pydicom displays it."""
    as_stored = ds.PhotometricInterpretation != "YBR_FULL_422"
    arr, props = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=as_stored)
    shape = (props["number_of_frames"], props["rows"], props["columns"],
             props["samples_per_pixel"])
    return arr.reshape(shape), props


def roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def burn(ds: Dataset, box: tuple[int, int, int, int]) -> bool:
    """Draw a checkerboard of extreme values into `box` (r0, r1, c0, c1), re-encoded in the
    input's own transfer syntax; False when that cannot be done losslessly here."""
    ts = ds.file_meta.TransferSyntaxUID
    if ts not in NATIVE and ts not in REENCODE:
        return False
    if ds.get("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        return False
    if ds.BitsAllocated == 1 or ts == ExplicitVRBigEndian or ts.is_deflated:
        return False
    arr, props = raw(ds)
    bits, signed = props["bits_stored"], props["pixel_representation"] == 1
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    r0, r1, c0, c1 = box
    r1, c1 = min(r1, arr.shape[1]), min(c1, arr.shape[2])
    yy, xx = np.mgrid[r0:r1, c0:c1]
    pattern = np.where((yy // 2 + xx // 2) % 2 == 0, hi, lo).astype(arr.dtype)
    arr = arr.copy()
    arr[:, r0:r1, c0:c1, :] = pattern[None, :, :, None]
    frames, rows, cols, samples = arr.shape
    shaped = arr.reshape((rows, cols, samples) if frames == 1 else arr.shape)
    shaped = shaped[..., 0] if samples == 1 else shaped
    if ts in NATIVE:
        ds.PixelData = shaped.astype(shaped.dtype.newbyteorder("<")).tobytes()
    else:
        compress(ds, ts, shaped, generate_instance_uid=False)
    return True


REGIONS = ((3, 2, 9, 7), (-6, -5, 40, 40))  # the second is clipped at the bottom-right corner


def expected_mask(rows: int, cols: int) -> np.ndarray:
    mask = np.zeros((rows, cols), bool)
    mask[2:9, 3:12] = True
    mask[rows - 5:, cols - 6:] = True
    return mask


@pytest.mark.parametrize("encoding", ["native", "rle", "jpeg2000"])
@pytest.mark.parametrize("name", list(FILES), ids=[f"{k}:{v}" for k, v in FILES.items()])
def test_redact_blanks_regions_and_keeps_every_other_pixel(name, encoding):
    ds = pydicom.dcmread(data_file(name))
    in_ts, in_pi = ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation
    burned = burn(ds, (2, 9, 3, 12))
    before, props = raw(ds)
    frames, rows, cols, samples = before.shape
    mask = expected_mask(rows, cols)
    if burned:
        assert len(np.unique(before[:, mask])) > 1, "the burned pattern is not in the input"

    assert redact_pixels(ds, REGIONS, encoding) is True
    out = roundtrip(ds)
    after, out_props = raw(out)

    assert after.shape == before.shape
    assert np.array_equal(after[:, ~mask], before[:, ~mask]), "a pixel outside changed"
    # the attributes tell the truth about what is stored
    pi, out_ts = out.PhotometricInterpretation, out.file_meta.TransferSyntaxUID
    if pi == "YBR_RCT":  # RGB stored with the reversible transform; decoders give RGB back
        assert out_ts == JPEG2000Lossless and out_props["photometric_interpretation"] == "RGB"
        pi = "RGB"
    else:
        assert out_props["photometric_interpretation"] == pi

    region = after[:, mask].reshape(-1, samples)
    fill = fill_value(pi, props["bits_stored"], props["pixel_representation"] == 1, samples)
    assert (region == np.asarray(fill, dtype=region.dtype)).all(), "region is not constant"
    if encoding == "native" or in_ts == ExplicitVRBigEndian:
        assert not out_ts.is_compressed
    if in_ts.is_compressed and not out_ts.is_compressed:
        assert out_ts == ExplicitVRLittleEndian
    if encoding == "rle" and in_ts != ExplicitVRBigEndian and props["bits_allocated"] in (8, 16):
        assert out_ts == RLELossless
    if encoding == "jpeg2000" and in_ts != ExplicitVRBigEndian and \
            props["bits_allocated"] in (8, 16) and min(rows, cols) >= 32:
        assert out_ts == JPEG2000Lossless
    if in_pi == "YBR_FULL_422":
        assert pi == "RGB"
    elif in_pi == "YBR_FULL":
        assert pi == "YBR_FULL"
    assert "YBR_RCT" not in pi and "YBR_ICT" not in pi and "422" not in pi
    if in_ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"):
        assert out.LossyImageCompression == "01"
    assert int(out.get("NumberOfFrames", 1)) == frames


def test_default_rgb_view_is_unchanged_outside_the_regions():
    """A JPEG YBR_FULL ultrasound written native still displays as before (pydicom's view)."""
    ds = pydicom.dcmread(data_file("SC_rgb_jpeg_dcmtk.dcm"))
    before = ds.pixel_array.copy()
    redact_pixels(ds, [(0, 0, 100, 20)], "native")
    after = roundtrip(ds).pixel_array
    assert ds.PhotometricInterpretation == "YBR_FULL"
    assert np.array_equal(after[20:], before[20:])
    assert len(np.unique(after[:20].reshape(-1, 3), axis=0)) == 1


def _dciodvfy_errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                         check=False)
    return {ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not found")
@pytest.mark.parametrize("name,encoding", [
    ("examples_ybr_color.dcm", "native"),  # US multi-frame, JPEG YBR_FULL_422 -> RGB
    ("examples_ybr_color.dcm", "jpeg2000"),
    ("US1_J2KR.dcm", "rle"),
    ("OBXXXX1A_2frame.dcm", "rle"),
    ("CT_small.dcm", "jpeg2000"),
])
def test_redacted_objects_stay_valid_for_dciodvfy(name, encoding, tmp_path):
    src = data_file(name)
    ds = pydicom.dcmread(src)
    redact_pixels(ds, [(0, 0, 50, 20)], encoding)
    out = tmp_path / "out.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert _dciodvfy_errors(out) <= _dciodvfy_errors(src)


def test_regions_outside_the_image_leave_the_object_untouched():
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    data = ds.PixelData
    assert redact_pixels(ds, [(200, 0, 10, 10), (0, -500, 10, 10)]) is False
    assert ds.PixelData == data


def test_clip_regions():
    assert clip_regions([(-10, -5, 20, 20)], rows=100, columns=50) == [(95, 100, 40, 50)]
    assert clip_regions([(-60, 0, 20, 20)], rows=100, columns=50) == [(0, 20, 0, 10)]
    assert clip_regions([(50, 0, 5, 5)], rows=100, columns=50) == []


def test_undecodable_pixels_raise_without_values():
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    with pytest.raises(RedactionError) as info:
        redact_pixels(ds, [(0, 0, 5, 5)])
    assert "(0002,0010)" in str(info.value) or "(7FE0,0010)" in str(info.value)
    assert str(ds.PatientName) not in str(info.value)
    del ds.PixelData
    with pytest.raises(RedactionError, match=r"\(7FE0,0010\)"):
        redact_pixels(ds, [(0, 0, 5, 5)])


# ---------------------------------------------------------------------------- decisions


def header(**kw: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    for key, value in kw.items():
        setattr(ds, key, value)
    return ds


def rule(name: str, match: dict, regions=((0, 0, 10, 10),)) -> RedactionRuleConfig:
    return RedactionRuleConfig(name=name, match=match, regions=tuple(regions))


def test_burned_in_yes_without_rule_is_refused():
    redactor = Redactor(RedactionConfig(rules=(rule("acme", {"Manufacturer": "ACME"}),)))
    ds = header(Modality="CT", Manufacturer="GE MEDICAL SYSTEMS",
                ManufacturerModelName="Revolution", BurnedInAnnotation="YES")
    decision = redactor.decide(ds)
    assert decision == Decision("GE MEDICAL SYSTEMS / Revolution", None, (), True)
    assert decision.refused
    assert decision.quarantine_reason == (
        "burned-in text risk, no redaction rule for GE MEDICAL SYSTEMS / Revolution")
    ds.BurnedInAnnotation = "NO"
    assert not redactor.decide(ds).refused  # CT is not in the at-risk modalities


@pytest.mark.parametrize("attrs,at_risk", [
    (dict(Modality="US"), True),
    (dict(Modality="XC"), True),
    (dict(Modality="OT"), True),
    (dict(Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.7"), True),
    (dict(Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"), False),
    (dict(Modality="MR", BurnedInAnnotation="yes"), True),
    (dict(Modality="MR"), False),
    (dict(Modality="GM", SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.2.1"), True),  # video
])
def test_at_risk_lists(attrs, at_risk):
    decision = Redactor(RedactionConfig()).decide(header(**attrs))
    assert decision.at_risk is at_risk
    assert decision.refused is at_risk


def test_at_risk_lists_are_configurable():
    cfg = RedactionConfig(at_risk_modalities=("MR",), at_risk_sop_classes=())
    redactor = Redactor(cfg)
    assert redactor.decide(header(Modality="MR")).refused
    assert not redactor.decide(header(Modality="US")).refused
    assert not redactor.decide(header(SOPClassUID="1.2.840.10008.5.1.4.1.1.7")).refused


def test_first_matching_rule_wins_yaml_before_ctp(tmp_path):
    script = tmp_path / "site.script"
    script.write_text('{ Manufacturer.containsIgnoreCase("ACME") } (0,0,99,9)\n'
                      '{ Modality.equals("US") } (0,0,88,8)\n')
    cfg = RedactionConfig(
        rules=(rule("acme-720", {"Manufacturer": "ACME", "Rows": 720}, [(1, 2, 3, 4)]),
               rule("acme-any", {"Manufacturer": {"istartswith": "acme"}}, [(5, 6, 7, 8)])),
        ctp_scripts=("site.script",),
    )
    redactor = Redactor(cfg, base_dir=tmp_path)
    d = redactor.decide(header(Modality="US", Manufacturer="ACME", Rows=720))
    assert (d.rule, d.regions) == ("acme-720", ((1, 2, 3, 4),))
    d = redactor.decide(header(Modality="US", Manufacturer="ACME", Rows=600))
    assert (d.rule, d.regions) == ("acme-any", ((5, 6, 7, 8),))
    d = redactor.decide(header(Modality="US", Manufacturer="Big Acme Corp"))
    assert (d.rule, d.regions) == ("site.script:1", ((0, 0, 99, 9),))
    d = redactor.decide(header(Modality="US", Manufacturer="Zonare"))
    assert (d.rule, d.at_risk, d.refused) == ("site.script:2", True, False)


def test_builtin_ctp_library_covers_a_known_machine():
    redactor = Redactor(RedactionConfig(ctp_scripts=("builtin",)))
    assert len(redactor.rules) == 52
    d = redactor.decide(header(Modality="US", Manufacturer="GE Healthcare",
                               ManufacturerModelName="LOGIQE9", Rows=720, Columns=960))
    assert d.rule == "DicomPixelAnonymizer.script:141"
    assert d.regions == ((0, 0, 960, 70),) and not d.refused


def test_a_bad_ctp_script_is_a_config_error(tmp_path):
    from gateway.config import ConfigError

    bad = tmp_path / "bad.script"
    bad.write_text('\n{ Rows.equals("1") *  } (0,0,1,1)')
    with pytest.raises(ConfigError, match=r"redaction.ctp_scripts\[0\]: line 2"):
        Redactor(RedactionConfig(ctp_scripts=(str(bad),)))


def test_redactor_sets_burned_in_annotation_only_when_a_rule_applied():
    ds = pydicom.dcmread(data_file("US1_UNCR.dcm"))
    ds.BurnedInAnnotation = "YES"
    redactor = Redactor(RedactionConfig(
        rules=(rule("us1", {"Modality": "US", "Rows": 480}, [(0, 0, 640, 40)]),)))
    miss = redactor.decide(header(Modality="US", Rows=600))
    assert miss.refused
    redactor.redact(ds, miss)
    assert ds.BurnedInAnnotation == "YES"
    decision = redactor.decide(ds)
    assert decision.rule == "us1"
    before = ds.pixel_array.copy()
    redactor.redact(ds, decision)
    assert ds.BurnedInAnnotation == "NO"
    after = roundtrip(ds).pixel_array
    assert (after[:40] == 0).all() and np.array_equal(after[40:], before[40:])
    assert before[:40].any()
