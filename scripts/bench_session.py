#!/usr/bin/env python
"""Curation session against the one-pass command, in one run, on generated small files.

Generates N small CT objects (64×64 16-bit, ~9 KB, identifiers and private tags as
bench_deid.py makes them) in four folders of N/4, then times, each as a `gantry` command:
  - `gantry deidentify IN OUT` (the one pass)
  - `gantry ingest DB IN`, then again on the unchanged tree, then `gantry export DB OUT2`
and checks OUT2 is byte-identical to OUT; then both ingests again in Python (Session.ingest),
without the interpreter's start. A re-ingest is timed three times and the median kept: it is a
tenth of a second, where one stray scheduling delay on a shared machine is a large part. Peak
memory (the largest process: the command or one of its workers) is measured for ingest and
export of N/4 and of N objects. The gateway and gantry packages are byte-compiled first, as
`pip install` does: an editable checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile
every module it imports, in every command.
Usage: python scripts/bench_session.py [--count 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_deid import make_ct  # noqa: E402

GANTRY = Path(sys.executable).parent / "gantry"


def generate(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
    studies = [(generate_uid(), generate_uid()) for _ in range(max(1, count // 50))]
    for i in range(count):
        study, series = studies[i // 50 % len(studies)]
        ds = make_ct(i, study, series, pixels)
        ds.Rows = ds.Columns = 64
        folder = root / f"part{i * 4 // count}"
        folder.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(folder / f"ct{i:05d}.dcm", ds, enforce_file_format=True)


def gantry(*args: str | Path) -> tuple[float, int]:
    """Seconds and peak RSS (MiB) of one `gantry` command: wait4 reports the largest of the
    command and the workers it waited for."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([str(GANTRY), *map(str, args), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):
            err.seek(0)
            raise SystemExit(f"gantry {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             + err.read().decode(errors="replace")[-2000:])
    return elapsed, usage.ru_maxrss // 1024


def compile_packages() -> None:
    """Byte-compile the installed code, as `pip install` does (see the module notes)."""
    import gantry as api
    import gateway

    folders = [str(Path(m.__file__).parent) for m in (gateway, api)]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True)


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False)
                                      for f in files_a)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("GANTRY_SITE_KEY", secrets.token_hex(32))
    w = ("--workers", str(args.workers))
    compile_packages()
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(root / "in", args.count)
        print(f"generated {args.count} files in {time.perf_counter() - start:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores")
        small_ingest = gantry("ingest", root / "small.gantry", root / "in" / "part0", *w)
        small_export = gantry("export", root / "small.gantry", root / "small-out", *w)
        batch, batch_peak = gantry("deidentify", root / "in", root / "batch", *w)
        ingest, ingest_peak = gantry("ingest", root / "s.gantry", root / "in", *w)
        reingest = statistics.median(gantry("ingest", root / "s.gantry", root / "in", *w)[0]
                                     for _ in range(3))
        export, export_peak = gantry("export", root / "s.gantry", root / "session", *w)
        identical = same_tree(root / "batch", root / "session")
        from gantry import Session  # the same two ingests in Python: no interpreter start

        with Session(root / "api.gantry", workers=args.workers, progress=False) as session:
            start = time.perf_counter()
            session.ingest(root / "in")
            api_ingest = time.perf_counter() - start
            again = []
            for _ in range(3):
                start = time.perf_counter()
                session.ingest(root / "in")
                again.append(time.perf_counter() - start)
            api_reingest = statistics.median(again)
    n = args.count
    print(f"\n{n} objects, {args.workers} workers")
    print("| step | seconds | objects/s | peak RSS |")
    print("| --- | --- | --- | --- |")
    print(f"| gantry deidentify (one pass) | {batch:.1f} | {n / batch:.0f} | {batch_peak} MiB |")
    print(f"| gantry ingest | {ingest:.1f} | {n / ingest:.0f} | {ingest_peak} MiB |")
    print(f"| gantry ingest, unchanged tree | {reingest:.3f} | {n / reingest:.0f} | – |")
    print(f"| gantry export | {export:.1f} | {n / export:.0f} | {export_peak} MiB |")
    both, command, api = (ingest + export) / batch, ingest / reingest, api_ingest / api_reingest
    print(f"\ningest + export / one pass: {both:.2f}x (target <= 1.3x: {met(both <= 1.3)})")
    print(f"first ingest / re-ingest: {command:.1f}x as commands (target >= 20x: "
          f"{met(command >= 20)}); in Python {api_ingest:.2f} s / {api_reingest:.3f} s = "
          f"{api:.1f}x ({met(api >= 20)})")
    print(f"peak RSS at {n // 4} -> {n} objects: ingest {small_ingest[1]} -> {ingest_peak} MiB, "
          f"export {small_export[1]} -> {export_peak} MiB")
    print(f"export byte-identical to deidentify: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
