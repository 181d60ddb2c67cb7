#!/usr/bin/env python
"""OCR cost, one core: milliseconds per image, and the pipeline's rate with OCR on a mix.

Times are CPU time of this process (the machines here are shared: wall time mostly measures
the neighbours).

1. OCR milliseconds per image (the redactor's read: two Tesseract reads per distinct frame) for
   a 640x480 RGB ultrasound frame (pydicom-data's US1_UNCR.dcm, its own burned-in text) and a
   512x512 8-bit secondary capture (vlut_04.dcm), median of --repeat runs.
2. Gantry's Pipeline, files in → files out, on a mix of 512x512 CT objects (header only) and 20 %
   at-risk ultrasound objects (US1_UNCR.dcm with a planted patient): objects/s with
   `on_risk: ocr` (OCR redaction plus the OCR check after it) against the same mix all
   header-only (`on_risk: pass`).
Usage:  python scripts/bench_ocr.py [--objects 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import data_store
from pydicom import dcmread
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.deid.ocr import clear_cache, read_words  # noqa: E402
from gateway.deid.redact import decode_pixels, palette  # noqa: E402
from gateway.pipeline import Forwarded, Pipeline  # noqa: E402

DATA = Path(data_store.__file__).parent / "data"


def ocr_ms(path: Path, repeat: int) -> float:
    ds = dcmread(path)
    pixels = decode_pixels(ds)
    read_words(pixels.array, pixels.photometric, palette(ds, pixels))  # engine start-up
    times = []
    for _ in range(repeat):
        clear_cache()  # a frame never seen: the cache would answer a repeat without reading
        t0 = time.process_time()
        read_words(pixels.array, pixels.photometric, palette(ds, pixels))
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def rate(folder: Path, on_risk: str, key: bytes) -> float:
    config = parse_config({"redaction": {"on_risk": on_risk}}, "<bench>")
    pipeline = Pipeline(config, key)
    files = sorted(folder.iterdir())
    out = Path(tempfile.mkdtemp(prefix="bench-ocr-out-"))
    try:
        t0 = time.process_time()
        for i, path in enumerate(files):
            outcome = pipeline.process(path, out / f"{i}.dcm")
            if not isinstance(outcome, Forwarded):
                print(f"  {path.name}: {outcome}", file=sys.stderr)
        return len(files) / (time.process_time() - t0)
    finally:
        shutil.rmtree(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    us, sc = DATA / "US1_UNCR.dcm", DATA / "vlut_04.dcm"
    print(f"OCR 640x480 US frame:       {ocr_ms(us, args.repeat):7.0f} ms")
    print(f"OCR 512x512 SC:             {ocr_ms(sc, args.repeat):7.0f} ms")

    folder = Path(tempfile.mkdtemp(prefix="bench-ocr-in-"))
    try:
        ct = dcmread(get_testdata_file("CT_small.dcm"))
        us_ds = dcmread(us)
        us_ds.PatientName, us_ds.PatientID = "BENCH^PATIENT", "7734902"
        for i in range(args.objects):
            ds = us_ds if i % 5 == 0 else ct
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.{i}"
            ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
        key = bytes(32)
        header = rate(folder, "pass", key)
        with_ocr = rate(folder, "ocr", key)
        print(f"pipeline, 20 % at risk, header-only: {header:7.1f} objects/s")
        print(f"pipeline, 20 % at risk, OCR on:      {with_ocr:7.1f} objects/s "
              f"({with_ocr / header:.2f}x)")
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
