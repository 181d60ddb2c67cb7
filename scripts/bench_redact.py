#!/usr/bin/env python
"""Pixel redaction throughput as a ratio to header-only de-identification, one core.

Generates a 512×512 16-bit CT (explicit VR little endian) and a 30-frame 480×640 RGB ultrasound
(native, ~27 MB), then runs Gantry's Pipeline on copies of each, files in → files out:
  - header-only: no rule matches (the ultrasound is let through with burned_in="pass"), so the
    pixel bytes are copied untouched
  - redaction: a rule matches; every frame is decoded, a band blanked, and the pixels written
    native, RLE lossless or JPEG 2000 lossless (redaction.output_encoding)
Prints objects/s and the ratio to header-only. Usage:
    python scripts/bench_redact.py [--ct 100] [--us 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.pipeline import Forwarded, Pipeline  # noqa: E402


def _base(sop_class: str, modality: str, i: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"DOE^JANE{i}", f"MRN{i:06d}", "19700101"
    ds.StudyDate = ds.SeriesDate = "20240115"
    ds.AccessionNumber = f"ACC{i:06d}"
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = "BENCH", f"{modality}-1"
    ds.InstanceNumber = i + 1
    return ds


def make_ct(i: int, rng: np.random.Generator) -> Dataset:
    ds = _base(CTImageStorage, "CT", i)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    yy, xx = np.mgrid[0:512, 0:512]
    body = np.where((yy - 256) ** 2 + (xx - 256) ** 2 < 230 ** 2, 1000 + (xx + yy) % 200, 0)
    noise = rng.integers(0, 32, (512, 512))
    ds.PixelData = (body + noise).astype(np.uint16).tobytes()  # a disc with texture and noise
    return ds


def make_us(i: int, rng: np.random.Generator, frames: int = 30) -> Dataset:
    ds = _base(UltrasoundMultiFrameImageStorage, "US", i)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = 480, 640, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation = "YES"
    ds.FrameTime = 33.3
    yy, xx = np.mgrid[0:480, 0:640]
    sector = ((xx - 320) ** 2 + yy**2 < 440**2) & (abs(xx - 320) < yy * 0.8 + 20)
    grey = np.where(sector, 40 + (yy // 4) % 60, 0).astype(np.uint8)
    speckle = rng.integers(0, 48, (frames, 480, 640), dtype=np.uint8) * sector
    frame = (grey + speckle)[..., None].repeat(3, axis=-1)
    frame[:, :40, 40:400] = 200  # the text band
    ds.PixelData = frame.tobytes()  # an ultrasound-like sector of speckle, grey levels in RGB
    return ds


def run(files: list[Path], out: Path, redaction: dict, burned_in: str | None) -> float:
    """objects/s of Pipeline.process over `files` (one process)."""
    config = parse_config({"redaction": redaction}, "<bench>")
    pipeline = Pipeline(config, os.urandom(32))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    for i, src in enumerate(files):
        outcome = pipeline.process(src, out / f"{i}.dcm", burned_in=burned_in)
        if not isinstance(outcome, Forwarded):
            raise SystemExit(f"bench object {i} quarantined: {outcome.reason}")
    return len(files) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=100, help="CT objects (default 100)")
    parser.add_argument("--us", type=int, default=8, help="ultrasound objects (default 8)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gantry-bench-redact-") as tmp:
        work = Path(tmp)
        cases = [
            ("CT 512x512 16-bit", make_ct, args.ct, [[0, 0, 512, 40]]),
            ("US 30x480x640 RGB", make_us, args.us, [[0, 0, 640, 60]]),
        ]
        for label, make, count, regions in cases:
            src = work / label.split()[0]
            src.mkdir()
            files = []
            for i in range(count):
                path = src / f"{i}.dcm"
                make(i, rng).save_as(path, enforce_file_format=True)
                files.append(path)
            rule = {"name": "bench", "match": {"Manufacturer": "BENCH"}, "regions": regions}
            header_only = run(files, work / "out", {}, "pass")
            for encoding in ("native", "rle", "jpeg2000"):
                rate = run(files, work / "out", {"rules": [rule], "output_encoding": encoding},
                           None)
                rows.append((label, encoding, count, header_only, rate, rate / header_only))
    head = ("object", "output", "n", "header-only obj/s", "redaction obj/s", "ratio")
    table = [head] + [(a, b, str(n), f"{h:.1f}", f"{r:.1f}", f"{x:.2f}")
                      for a, b, n, h, r, x in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for k, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("\nratio = redaction throughput / header-only de-identification throughput "
          "(same objects, one process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
