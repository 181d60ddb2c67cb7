"""Messages an operator can act on, and files only their owner can read.

Each test reproduces what a new user met (a pydicom hint about `force=True`, "no association",
a YAML error in `<unicode string>`, a world-readable key accepted silently, originals copied
world-readable) and checks the message names the file, the element or the peer, and the problem.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.dicomio import DicomReadError, read_for_deid
from gateway.net.reach import connection_problem
from gateway.sitekey import SiteKeyError, create_key_file, load_site_key
from gateway.statedir import StateDir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------ reading files


@pytest.mark.parametrize("content, words", [
    (b"", "the file is empty (0 bytes)"),
    (b"PatientName,PatientID\n", "22 bytes, too short for the 128-byte preamble"),
    (b"\x01" * 4096, "no 'DICM' prefix after the 128-byte preamble"),
], ids=["empty", "csv", "no-prefix"])
def test_a_non_dicom_file_is_named_with_what_is_wrong(tmp_path, content, words):
    path = tmp_path / "scan.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomReadError) as info:
        read_for_deid(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a DICOM file: ") and words in message
    assert "force" not in message  # pydicom's API hint means nothing to an operator


# ------------------------------------------------------------------ configuration


def test_a_yaml_error_names_the_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "gantry.yaml"
    path.write_text("network:\n  port: 104\n   ae_title: GANTRY\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line 3, column 12: not valid YAML: ")
    assert "<unicode string>" not in str(info.value)
    assert main(["status", "--config", str(path)]) == 2
    assert f"{path}: line 3" in capsys.readouterr().err


def key_config(tmp_path: Path, key: Path) -> Path:
    path = tmp_path / "gantry.yaml"
    path.write_text(f"site_key: {{file: {key}}}\n")
    return path


@pytest.mark.parametrize("bits", [0o644, 0o640, 0o604, 0o660])
def test_a_site_key_others_can_read_is_refused(tmp_path, bits):
    key = create_key_file(tmp_path / "site.key")
    os.chmod(key, bits)
    with pytest.raises(SiteKeyError) as info:
        load_site_key(load_config(key_config(tmp_path, key)))
    assert str(info.value) == (f"{key}: the site key file is open to others (mode {bits:04o}); "
                               f"it must be owner-only: chmod 600 {key}")
    os.chmod(key, 0o600)
    assert len(load_site_key(load_config(key_config(tmp_path, key)))) == 32


def test_a_site_key_that_is_not_hex_is_refused_without_echoing_it(tmp_path, monkeypatch):
    key = tmp_path / "site.key"
    secret = "correct horse battery staple, long enough"
    key.write_text(secret + "\n")
    os.chmod(key, 0o600)
    with pytest.raises(SiteKeyError) as info:
        load_site_key(load_config(key_config(tmp_path, key)))
    assert "must be hexadecimal digits" in str(info.value) and str(key) in str(info.value)
    assert "horse" not in str(info.value)
    monkeypatch.setenv("GANTRY_TEST_KEY", "zz" * 32)
    (tmp_path / "env.yaml").write_text("site_key: {env: GANTRY_TEST_KEY}\n")
    with pytest.raises(SiteKeyError, match="environment variable GANTRY_TEST_KEY: .*hexadecimal"):
        load_site_key(load_config(tmp_path / "env.yaml"))


# ------------------------------------------------------------------ destinations


def test_a_refused_connection_names_host_port_and_cause():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert connection_problem("127.0.0.1", port) == (
            f"connection failed: 127.0.0.1:{port}: Connection refused")


def test_an_unknown_host_names_the_host_and_says_it_does_not_resolve():
    try:
        socket.getaddrinfo("pacs.invalid", 104)
        pytest.skip("this machine's resolver answers for .invalid names")
    except socket.gaierror as exc:
        raised = exc
    message = connection_problem("pacs.invalid", 104, raised)
    assert message.startswith("connection failed: pacs.invalid:104: the host name does not "
                              "resolve (")
    assert "gaierror" not in message


def test_a_peer_that_accepts_but_does_not_speak_dicom_is_told_apart():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def accept_one() -> None:
            conn, _ = server.accept()
            conn.close()

        thread = threading.Thread(target=accept_one)
        thread.start()
        message = connection_problem("127.0.0.1", port)
        thread.join(10)
    assert message == (f"connection failed: 127.0.0.1:{port}: the connection opened but the "
                       "peer did not answer the association request (not a DICOM node on that "
                       "port, or it aborted)")


# ------------------------------------------------------------------ owner-only files


def test_the_state_directory_is_owner_only_and_an_old_one_is_tightened(tmp_path):
    root = tmp_path / "state"
    for d in ("spool", "out", "quarantine"):
        (root / d).mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o755)
    (root / "gantry.db").write_bytes(b"")
    os.chmod(root / "gantry.db", 0o644)
    state = StateDir(root)
    assert mode(root) == 0o700
    assert {mode(d) for d in (state.spool, state.out, state.quarantine)} == {0o700}
    assert mode(state.db) == 0o600
    lock = state.lock()
    assert lock is not None and mode(root / "node.lock") == 0o600
    lock.close()
    fresh = StateDir(tmp_path / "new" / "state")
    assert mode(fresh.root) == 0o700 and mode(fresh.quarantine) == 0o700


def test_deidentify_keeps_its_quarantine_copies_of_originals_owner_only(tmp_path, gantry_env):
    src = tmp_path / "in" / "study" / "series"
    src.mkdir(parents=True)
    (src / "note.dcm").write_bytes(b"not dicom at all")
    os.chmod(src / "note.dcm", 0o644)
    ok = dcmread(get_testdata_file("CT_small.dcm"))
    ok.save_as(src / "ct.dcm")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "deidentify", str(tmp_path / "in"),
                          str(out), "--workers", "1"], env=gantry_env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    qdir = tmp_path / "out-quarantine"
    copy = qdir / "study" / "series" / "note.dcm"
    assert copy.read_bytes() == b"not dicom at all"
    assert mode(copy) == 0o600
    assert {mode(d) for d in (qdir, qdir / "study", qdir / "study" / "series")} == {0o700}
    reason = (qdir / "study" / "series" / "note.dcm.reason.txt").read_text()
    assert reason.startswith("unreadable: not a DICOM file: 16 bytes, too short")
    # The de-identified object carries one DeidentificationMethod value per profile/option.
    (written,) = [p for p in out.rglob("*") if p.is_file()]
    ds = dcmread(written)
    methods = list(ds["DeidentificationMethod"].value)
    assert methods == [item.CodeMeaning for item in ds.DeidentificationMethodCodeSequence]
    assert "Retain Longitudinal Temporal Information Modified Dates Option" in methods


# ------------------------------------------------------------------ output for scripts

LONG_REASON = "no route: modality OT, calling AE " + "X" * 200


def quarantined_state(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A configuration whose state directory holds `n` quarantined jobs (originals on disk):
    the first half sent by CT_1 for a long reason, the rest by MR_2 for 'unreadable: ...'."""
    from gateway.store import Store

    key = create_key_file(tmp_path / "site.key")
    config = tmp_path / "gantry.yaml"
    config.write_text(f"site_key: {{file: {key}}}\nstate_dir: {tmp_path / 'state'}\n")
    state = StateDir(tmp_path / "state")
    store = Store(state.db, durable=False)
    ids = [f"{i:032x}" for i in range(n)]
    store.add_jobs([(j, {"calling_ae": "CT_1" if i < n // 2 else "MR_2", "called_ae": "GANTRY",
                         "peer": "127.0.0.1", "sop_hash": "h", "sop_class_uid": "1.2.3",
                         "transfer_syntax": "1.2.840.10008.1.2.1", "size": 1})
                    for i, j in enumerate(ids)])
    store.claim_jobs("worker-1-x", limit=n)
    for i, job in enumerate(ids):
        store.quarantine(job, LONG_REASON if i < n // 2 else "unreadable: not a DICOM file")
        state.quarantined(job).write_bytes(b"original")
    store.close()
    return config, ids


def run_gantry(capsys, *args: str) -> tuple[int, str, str]:
    """`gantry ARGS` in this process (pytest's stdin is no terminal): status, stdout, stderr."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_quarantine_list_filters_prints_json_and_stops_quietly_in_a_pipe(tmp_path, capsys):
    config, ids = quarantined_state(tmp_path, 400)
    code, out, _ = run_gantry(capsys, "quarantine", "list", "--json", "--reason", "UNREADABLE",
                              "--config", str(config))
    listed = json.loads(out)
    assert code == 0 and [r["job"] for r in listed] == ids[200:]
    assert {r["calling_ae"] for r in listed} == {"MR_2"}
    assert all(r["reason"] == "unreadable: not a DICOM file" for r in listed)
    _, out, err = run_gantry(capsys, "quarantine", "list", "--calling-ae", "CT_1", "--config",
                             str(config))
    assert out.count("\n") == 200 and err == "200 quarantined\n"
    # 400 long lines (over 64 KB) into `head -1`: the reader leaves early; no traceback,
    # no "Broken pipe" message.
    piped = subprocess.run(f"{sys.executable} -m gateway.cli quarantine list --config {config} "
                           "| head -1", shell=True, capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith(ids[0]) and piped.stdout.count("\n") == 1
    assert piped.stderr == "", piped.stderr


def test_release_purge_and_prune_print_one_line_and_purge_all_asks(tmp_path, capsys):
    config, ids = quarantined_state(tmp_path, 6)
    state = tmp_path / "state"
    # No terminal to ask: purge --all refuses, says how to confirm, and deletes nothing.
    code, out, err = run_gantry(capsys, "quarantine", "purge", "--all", "--config", str(config))
    assert code == 1 and out == ""
    assert "purge 6 quarantined originals" in err and "--yes" in err
    assert len(list((state / "quarantine").iterdir())) == 6
    assert run_gantry(capsys, "quarantine", "release", "--all", "--calling-ae", "MR_2",
                      "--config", str(config)) == (
        0, f"3 released: no node is running on {state}; `gantry serve` will re-run them with "
           "the configuration it is started with\n", "")
    assert run_gantry(capsys, "quarantine", "purge", "--all", "--yes", "--config",
                      str(config)) == (0, "3 purged\n", "")
    assert not list((state / "quarantine").iterdir())  # three purged, three back in the spool
    assert sorted(p.name for p in (state / "spool").iterdir()) == [f"{j}.dcm" for j in ids[3:]]
    code, out, err = run_gantry(capsys, "prune", "--older-than", "0", "--config", str(config))
    assert code == 0 and err == ""
    assert out.startswith("pruned 3 objects") and out.count("\n") == 1


def test_deidentify_quiet_prints_the_summary_only_and_lines_never_wrap(tmp_path, gantry_env):
    deep = tmp_path / "in" / ("a-folder-with-a-long-name-" * 4)
    deep.mkdir(parents=True)
    for i in range(3):
        (deep / f"not-dicom-{i}.dcm").write_bytes(b"x" * 10)
    args = [sys.executable, "-m", "gateway.cli", "deidentify", str(tmp_path / "in")]
    loud = subprocess.run([*args, str(tmp_path / "out1"), "--workers", "1"], env=gantry_env,
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in loud.stderr.splitlines() if line.startswith("quarantined ")]
    assert len(lines) == 3 and all(str(deep) in line and line.endswith("too short for the "
                                   "128-byte preamble and 'DICM' prefix of a DICOM file "
                                   "(PS3.10 7.1)") for line in lines)
    quiet = subprocess.run([*args, str(tmp_path / "out2"), "--workers", "1", "--quiet"],
                           env=gantry_env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 1 and quiet.stderr == ""
    assert quiet.stdout.startswith("3 objects: 0 de-identified, 3 quarantined")
