"""The checkpoints on the command line over the corpus and the planted folder: `gantry ingest`,
`examine`, `configure`, `anonymize`, `redact`, `verify`, `export`, and the export byte-identical
to `gantry deidentify` with the same configuration."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from sessionhelpers import assert_nothing_planted, gantry, tree, write_config


def test_the_checkpoints_on_the_command_line(dump: Path, batch_folder: Any, tmp_path: Path,
                                             gantry_env: dict[str, str]) -> None:
    config = write_config(tmp_path / "cfg")
    db = tmp_path / "dump.gantry"
    runs = {}
    for name, *args in (("ingest", "ingest", db, dump, "--workers", "2"),
                        ("reingest", "ingest", db, dump),
                        ("examine", "examine", db),
                        ("configure", "configure", db, config),
                        ("anonymize", "anonymize", db),
                        ("redact", "redact", db, "--all"),
                        ("verify", "verify", db),
                        ("export", "export", db, tmp_path / "session" / "OUT"),
                        ("again", "export", db, tmp_path / "session" / "OUT"),
                        ("deidentify", "deidentify", dump, tmp_path / "batch" / "OUT",
                         "--config", config)):
        runs[name] = gantry(*args, env=gantry_env)
        assert runs[name].returncode in (0, 1), runs[name].stderr
        assert_nothing_planted(batch_folder.planted, runs[name].stdout + runs[name].stderr)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    ocr = gantry("examine", db, "--ocr", env=gantry_env)  # pixels: not in a session's index
    assert ocr.returncode == 2 and "--ocr reads pixels" in ocr.stderr
    files = sum(1 for p in dump.rglob("*") if p.is_file())
    assert f"{files} new, 0 unchanged, 0 changed" in runs["ingest"].stdout
    assert f"0 new, {files} unchanged, 0 changed" in runs["reingest"].stdout
    assert "machine signature" in runs["examine"].stdout
    assert "G.E. Medical Systems / LOGIQ 700" in runs["examine"].stdout
    assert "elements changed" in runs["anonymize"].stdout
    assert "logiq-700" in runs["redact"].stdout
    assert "would be quarantined" in runs["verify"].stdout
    assert runs["export"].returncode == runs["deidentify"].returncode == 1  # refusals
    assert "already done" in runs["again"].stdout and "this run: 0 exported" in runs["again"].stdout
    mine, theirs = tree(tmp_path / "session" / "OUT"), tree(tmp_path / "batch" / "OUT")
    assert len(mine) > 100
    for name, data in mine.items():
        assert theirs.get(name) == data, f"{name} differs from gantry deidentify's"
    # deidentify refuses conflicting files too (it may write one whose copy it quarantined for
    # another reason, where the session refuses to choose)
    conflicts = runs["ingest"].stdout.split(" SOP Instance UIDs in conflict")[0].split()[-1]
    assert int(conflicts) > 0 and len(set(theirs) - set(mine)) <= int(conflicts)
    reasons = tree(tmp_path / "session" / "OUT-quarantine")
    for name, data in reasons.items():
        if name.endswith(".reason.txt"):
            assert_nothing_planted(batch_folder.planted, data.decode())


def test_configure_keeps_the_text_and_its_hash_and_names_the_gantry_key(
        tmp_path: Path, gantry_env: dict[str, str]) -> None:
    import hashlib

    import gantry as api

    db = tmp_path / "s.gantry"
    good = write_config(tmp_path / "good")
    ran = gantry("configure", db, good, env=gantry_env)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert ran.returncode == 0 and f"(sha256 {digest})" in ran.stdout, ran.stderr
    # the way other tools' documents write it: refused, naming the Gantry key that does the job
    seed = write_config(tmp_path / "seed", "date_jitter: {min_days: -30, max_days: -1}\n"
                                           "remove_private_tags: true\n")
    refused = gantry("configure", db, seed, env=gantry_env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"{seed}: date_jitter: not a Gantry key" in refused.stderr
    assert "profile.date_shift_days: [-30, -1]" in refused.stderr
    with api.Session(db) as session:  # the configuration in force did not change
        assert session.config_hash == digest
        assert session.config.profile.date_shift_days == (-365, -1)
