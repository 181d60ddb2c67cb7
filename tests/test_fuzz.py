"""Fuzz: 2,025 mutated objects (fixed seeds) interleaved with 225 valid ones through
`gantry deidentify`. Every valid object is written; every mutated one is either quarantined with
a reason that names its problem or written as an object pydicom and dcmtk read back whole;
no worker death costs anything. (The gateway's fuzz run is in tests/net/test_fuzz_gateway.py.)"""

from __future__ import annotations

import re
import subprocess
import sys

import fuzzing
from fuzzing import read_back, reason_problems

from gateway.deid.keyed import new_uid

COUNT, EVERY_VALID = 2250, 10  # object i is valid when i % EVERY_VALID == 0
KEY = "5c" * 32
def test_fuzzed_objects_through_the_batch_command(tmp_path):
    bases = fuzzing.load_bases(tmp_path / "bases")
    source = tmp_path / "in"
    kinds = {p.name: k for p, k in fuzzing.write_corpus(source, COUNT, EVERY_VALID, 17_000,
                                                         bases).items()}
    assert sum(k != "valid" for k in kinds.values()) >= 2000
    assert set(kinds.values()) == {"valid", *fuzzing.KINDS}

    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "deidentify", str(source),
                          str(out), "--workers", "2"], capture_output=True, text=True,
                         env={"GANTRY_SITE_KEY": KEY, "PATH": "/usr/bin:/bin"}, timeout=600)
    assert run.returncode == 1, run.stderr[-2000:]  # some inputs refused, none crashed it
    summary = re.search(r"(\d+) objects: (\d+) de-identified, (\d+) quarantined", run.stdout)
    assert summary, run.stdout[-2000:]
    total, written, quarantined = map(int, summary.groups())
    assert total == written + quarantined == COUNT

    reasons = {p.name.removesuffix(".reason.txt"): p.read_text().strip()
               for p in (tmp_path / "out-quarantine").glob("*.reason.txt")}
    assert len(reasons) == quarantined
    assert not [n for n in reasons if kinds[n] == "valid"]
    assert {n: r for n, r in reasons.items() if reason_problems(r)} == {}
    # What each kind of damage must come to: nesting and huge lengths are never let through.
    assert all("nested" in reasons.get(n, "") for n, k in kinds.items() if k == "nest")
    assert all(n in reasons for n, k in kinds.items() if k == "huge")

    outputs = sorted(out.rglob("*.dcm"))
    key = bytes.fromhex(KEY)
    names = {p.stem for p in outputs}
    missing = [n for n, k in kinds.items()
               if k == "valid" and new_uid(key, fuzzing.uid(int(n[:5]))) not in names]
    assert not missing
    assert read_back(outputs) == []


def test_mutations_are_deterministic(tmp_path):
    bases = fuzzing.load_bases(tmp_path / "bases")
    again = fuzzing.load_bases(tmp_path / "again")
    for seed, (base, same) in enumerate(zip(bases, again, strict=True)):
        assert fuzzing.mutate(base, 7, seed) == fuzzing.mutate(same, 7, seed)
        assert fuzzing.mutate(base, 7, seed)[1] != fuzzing.valid(base, 7)
