#!/usr/bin/env python
"""OCR cost: milliseconds per image, and a Gantry node's end-to-end rate with OCR on a mix.

1. OCR CPU milliseconds per image (what the redactor reads: every text candidate of a frame,
   the cache emptied before each read) for a 640x480 RGB ultrasound frame (pydicom-data's
   US1_UNCR.dcm, busy with its own text) and a 512x512 8-bit secondary capture (vlut_04.dcm),
   median of --repeat reads.
2. A real Gantry node (`gantry serve`, 2 workers) between dcmtk storescu (the modality, one
   association) and dcmtk storescp (the research PACS), set up as scripts/bench_gateway.py sets
   it up: --objects objects, 80 % 512x512 CT (header only) and 20 % at-risk ultrasound
   (US1_UNCR with a patient in the header and burned into the pixels, different in each, so no
   read is a repeat). Sent once with `redaction.on_risk: ocr` (OCR redaction, then the OCR check
   of the result) and once with `on_risk: pass` (header only), in one run: objects/s end to end
   (first sent to last at the PACS or in quarantine), the ratio, the node's CPU per object, and
   how many ultrasound objects reached the PACS with some of their planted text left.

Usage:  python scripts/bench_ocr.py [--objects 100] [--repeat 5]
Needs dcmtk (storescu, storescp) on PATH, Tesseract's English model and the OCR extra.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import data_store
import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_gateway import (  # noqa: E402  (the node, the modality and the PACS, as it runs them)
    LOG_CONFIG,
    StoreSCP,
    free_port,
    gantry_config,
    generate,
    process_tree_cpu,
    send,
    wait_port,
)

from gateway.deid.ocr import clear_cache, read_words  # noqa: E402
from gateway.deid.redact import decode_pixels, palette  # noqa: E402

DATA = Path(data_store.__file__).parent / "data"
US, SC = DATA / "US1_UNCR.dcm", DATA / "vlut_04.dcm"


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


FAMILY = ("OKAFOR", "NGUYEN", "KOWALSKI", "FERREIRA", "HALVORSEN", "MBEKI", "TANAKA")
GIVEN = ("GRACE", "MINH", "PIOTR", "ANA", "INGRID")


def at_risk_objects(folder: Path, count: int) -> list[Path]:
    """`count` ultrasound objects, each with its own patient burned into its pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    base = dcmread(US)
    pixels = base.pixel_array  # RGB, 480x640x3, 8 bit
    font = ImageFont.load_default(16)
    paths = []
    for i in range(count):
        family, given = FAMILY[i % len(FAMILY)], GIVEN[i // len(FAMILY) % len(GIVEN)]
        pid, name = f"{7734900 + i}", f"{family}^{given}"
        image = Image.fromarray(pixels.copy())
        draw = ImageDraw.Draw(image)
        y = 120 + 7 * (i % 20)
        for text in (f"{family}, {given.title()}", pid, "12/03/1971"):
            draw.text((140, y), text, fill=(255, 255, 255), font=font)
            y += 26
        base.PixelData = np.asarray(image).tobytes()
        base.PatientName, base.PatientID, base.PatientBirthDate = name, pid, "19710312"
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"us{i:05}.dcm"
        base.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_node(root: Path, files: list[Path], logcfg: Path, on_risk: str
             ) -> tuple[float, float, int, Path]:
    """Send `files` through a fresh Gantry node with `redaction.on_risk`: (seconds from the
    first sent to the last forwarded or quarantined, the node's CPU seconds, quarantined, the
    research PACS's folder)."""
    scp = StoreSCP(root / f"pacs-{on_risk}", True)
    port = free_port()
    config = gantry_config(root, scp.port, port)
    data = yaml.safe_load(config.read_text())
    data["redaction"] = {"on_risk": on_risk}
    config.write_text(yaml.safe_dump(data))
    quarantine = root / "state" / "quarantine"
    env = {**os.environ, "GANTRY_LOG_FILE": str(root / f"gantry-{on_risk}.log")}
    node = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config",
                             str(config)], env=env, cwd=ROOT)
    try:
        wait_port(port)
        time.sleep(3)  # let the worker and forwarder processes finish importing
        cpu0 = process_tree_cpu(node.pid)
        t0 = time.perf_counter()
        send(port, files, logcfg, "GANTRY", 1)
        while True:
            held = sum(1 for _ in quarantine.iterdir()) if quarantine.exists() else 0
            if scp.count() + held >= len(files):
                break
            if time.perf_counter() - t0 > 1800:
                raise TimeoutError(f"only {scp.count() + held} of {len(files)} came through")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        cpu1 = process_tree_cpu(node.pid)
    finally:
        node.terminate()
        node.wait(60)
        scp.stop()
    cpu = sum(cpu1.values()) - sum(cpu0.values())
    return elapsed, cpu, held, scp.folder


def text_left(folder: Path) -> tuple[int, int]:
    """(ultrasound objects at the PACS still showing planted text, ultrasound objects): a
    pixel pure white (as the text was drawn) where the original image is not."""
    base_white = np.all(dcmread(US).pixel_array == 255, axis=-1)
    left = seen = 0
    for path in folder.iterdir():
        ds = dcmread(path)
        if ds.Modality != "US":
            continue
        seen += 1
        white = np.all(ds.pixel_array == 255, axis=-1)
        left += bool((white & ~base_white).any())
    return left, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"OCR 640x480 US frame:  {ocr_ms(US, args.repeat):6.0f} ms CPU")
    print(f"OCR 512x512 SC:        {ocr_ms(SC, args.repeat):6.0f} ms CPU")

    with tempfile.TemporaryDirectory(prefix="bench-ocr-") as tmp:
        root = Path(tmp)
        risky = args.objects // 5
        ct = generate(root / "in-ct", args.objects - risky)
        us = at_risk_objects(root / "in-us", risky)
        files = [us.pop() if i % 5 == 0 and us else ct.pop() for i in range(args.objects)]
        logcfg = root / "storescu-log.cfg"
        logcfg.write_text(LOG_CONFIG)
        print(f"Gantry node (2 workers), storescu -> gantry serve -> storescp, {args.objects} "
              f"objects, {risky} of them at-risk ultrasound, {os.cpu_count()} CPUs:")
        rates = {}
        for on_risk, label in (("ocr", "OCR on     "), ("pass", "header-only")):
            elapsed, cpu, held, pacs = run_node(root, files, logcfg, on_risk)
            rates[on_risk] = args.objects / elapsed
            left, seen = text_left(pacs)
            print(f"  {label} (on_risk: {on_risk:4}): {rates[on_risk]:6.1f} objects/s end to "
                  f"end, {cpu * 1000 / args.objects:5.0f} ms node CPU per object; "
                  f"{held} quarantined; planted text left in {left} of {seen} ultrasound "
                  "objects at the PACS")
        print(f"  OCR on / header-only: {rates['ocr'] / rates['pass']:.2f}x")


if __name__ == "__main__":
    main()
