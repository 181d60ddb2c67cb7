#!/usr/bin/env python
"""Throughput of the pipeline with the encrypted backup on vs off, one process.

Generates N 512×512 16-bit CT objects (bench_deid.py's generator), runs `Pipeline.process` on
every object with the backup off and on (RSA-3072 recipient, AES-256 CMS), alternating rounds,
and prints objects/s for each and the ratio. Usage: python scripts/bench_backup.py [--count 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_deid import generate  # noqa: E402

from gateway.config import BackupConfig, parse_config  # noqa: E402
from gateway.pipeline import Forwarded, Pipeline  # noqa: E402
from gateway.recipients import create_recipient  # noqa: E402


def run(pipeline: Pipeline, files: list[Path], out: Path, backup: BackupConfig) -> float:
    """Seconds to process every file; every object must be forwarded."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    start = time.perf_counter()
    for f in files:
        outcome = pipeline.process(f, out / f.name, backup=backup)
        if not isinstance(outcome, Forwarded):
            raise SystemExit(f"benchmark invalid: {f.name} quarantined: {outcome.reason}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gantry-bench-backup-"))
    try:
        src = work / "in"
        src.mkdir()
        generate(src, args.count)
        files = sorted(src.iterdir())
        _, cert = create_recipient("bench", work / "keys")
        config = parse_config({"site_key": {"env": "UNUSED"}}, "<bench>")
        pipeline = Pipeline(config, os.urandom(32))
        off = BackupConfig(enabled=False)
        on = BackupConfig(enabled=True, recipients=(str(cert),))
        run(pipeline, files[:10], work / "warm", on)  # load tables and the certificate
        best = {"off": float("inf"), "on": float("inf")}
        for _ in range(args.rounds):
            best["off"] = min(best["off"], run(pipeline, files, work / "off", off))
            best["on"] = min(best["on"], run(pipeline, files, work / "on", on))
        n = len(files)
        print(f"\n{n} CT objects, 512x512 16-bit, pipeline in one process, best of "
              f"{args.rounds} rounds\n")
        for name in ("off", "on"):
            print(f"backup {name:3s}  {n / best[name]:8.0f} objects/s")
        extra_ms = (best["on"] - best["off"]) / n * 1000
        print(f"\nbackup on / off: {best['off'] / best['on']:.2f}x of the backup-off throughput "
              f"({extra_ms:.2f} ms more per object)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
