"""DICOM TLS at both ends, against dcmtk storescu/storescp in their TLS modes, with
certificates made by openssl here: a site CA signs the gateway's, the PACS's and a modality's
certificates; a rogue CA signs an intruder's."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from nethelpers import (
    DCMTK_ENV,
    free_port,
    make_objects,
    need,
    storescu,
    wait_for,
    wait_port,
    write_config,
)
from pydicom import dcmread
from receivers import running_receiver

from gateway.config import ConfigError, parse_config
from gateway.net.forwarder import Outbox
from gateway.net.tls import client_context, server_context
from gateway.statedir import StateDir
from gateway.store import Store

CA_EXT = ("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
          "subjectKeyIdentifier=hash\n")
LEAF_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n"
            "authorityKeyIdentifier=keyid\n")


def openssl(*args: str, cwd: Path) -> None:
    run = subprocess.run([need("openssl"), *args], cwd=cwd, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.pem; gantry, pacs and modality .pem/.key signed by it; rogue-ca.pem, and intruder
    .pem/.key signed by the rogue CA. Every certificate names 127.0.0.1."""
    d = tmp_path_factory.mktemp("pki")
    (d / "ca.ext").write_text(CA_EXT)
    (d / "leaf.ext").write_text(LEAF_EXT)
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                "-subj", f"/CN=Test {ca}", "-out", f"{ca}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{ca}.csr", "-signkey", f"{ca}.key", "-days", "2",
                "-extfile", "ca.ext", "-out", f"{ca}.pem", cwd=d)
    for name, ca in (("gantry", "ca"), ("pacs", "ca"), ("modality", "ca"),
                     ("intruder", "rogue-ca")):
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
                f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext",
                "-out", f"{name}.pem", cwd=d)
    return d


def tls_flags(pki: Path, who: str | None, ca: str = "ca") -> tuple[str, ...]:
    """dcmtk options: TLS with `who`'s certificate (None: anonymous), trusting `ca`."""
    mine = ("+tls", str(pki / f"{who}.key"), str(pki / f"{who}.pem")) if who else ("+tla",)
    return (*mine, "+cf", str(pki / f"{ca}.pem"))


def server_tls(pki: Path, require: bool = False) -> dict:
    tls = {"certificate": str(pki / "gantry.pem"), "private_key": str(pki / "gantry.key")}
    if require:
        tls |= {"ca_certificates": str(pki / "ca.pem"), "require_client_certificate": True}
    return tls


class TLSStoreSCP:
    """dcmtk storescp on TLS only, requiring a client certificate signed by the site CA."""

    def __init__(self, pki: Path, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [need("storescp"), *tls_flags(pki, "pacs"), "-aet", "PACS", "+uf",
             "--output-directory", str(folder), str(self.port)], env=DCMTK_ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def files(self) -> list[Path]:
        return sorted(self.folder.iterdir())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def tls_storescp(pki, tmp_path):
    started: list[TLSStoreSCP] = []

    def start() -> TLSStoreSCP:
        scp = TLSStoreSCP(pki, tmp_path / f"pacs{len(started)}")
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def test_modality_to_gateway_to_pacs_all_over_tls(pki, tmp_path, gateway, tls_storescp):
    """Client certificates required at the gateway and at the PACS; the gateway's port
    refuses plaintext, anonymous TLS and a certificate from another CA."""
    scp = tls_storescp()
    config = write_config(tmp_path, {"pacs": ("PACS", scp.port)})
    data = yaml.safe_load(config.read_text())
    data["network"]["tls"] = server_tls(pki, require=True)
    data["destinations"]["pacs"]["tls"] = {
        "ca_certificates": str(pki / "ca.pem"), "certificate": str(pki / "gantry.pem"),
        "private_key": str(pki / "gantry.key")}
    config.write_text(yaml.safe_dump(data))
    gw = gateway(config, tmp_path / "gantry.log")
    objects = make_objects(tmp_path / "in", 3)
    files = [p for p, _ in objects]
    run = storescu(gw.port, files, extra=tls_flags(pki, "modality"))
    assert run.returncode == 0, run.stderr
    assert wait_for(lambda: len(scp.files()) == 3, 120), "not delivered over TLS"
    sent = {uid for _, uid in objects}
    got = {str(dcmread(p).SOPInstanceUID) for p in scp.files()}
    assert len(got) == 3 and not got & sent  # de-identified copies
    for extra in ((), tls_flags(pki, None), tls_flags(pki, "intruder")):
        run = storescu(gw.port, files[:1], calling="INTRUDER", extra=extra)
        assert run.returncode != 0, f"accepted with {extra}"
    assert {r["calling_ae"] for r in gw.store().audit()} == {"MODALITY"}
    log = (tmp_path / "gantry.log").read_text()
    assert log.count('"tls.refused"') >= 2  # the plaintext one and the anonymous one at least


def test_client_certificates_are_optional_unless_required(pki, tmp_path):
    ct = make_objects(tmp_path / "in", 1)[0][0]
    with running_receiver(tmp_path, tls=server_tls(pki)) as rx:
        for who in (None, "modality"):
            run = storescu(rx.port, [ct], extra=tls_flags(pki, who))
            assert run.returncode == 0, run.stderr
        run = storescu(rx.port, [ct], extra=tls_flags(pki, None, ca="rogue-ca"))
        assert run.returncode != 0  # the modality does not trust the gateway's certificate


def test_a_bare_connection_does_not_stop_the_tls_port_accepting(pki, tmp_path):
    """pynetdicom does the handshake in its accept loop: one connection that never starts a
    handshake kept everyone else out."""
    ct = make_objects(tmp_path / "in", 1)[0][0]
    with running_receiver(tmp_path, tls=server_tls(pki)) as rx:
        with socket.create_connection(("127.0.0.1", rx.port)):
            run = subprocess.run(
                [need("storescu"), *tls_flags(pki, None), "-aec", "GANTRY", "127.0.0.1",
                 str(rx.port), str(ct)], env=DCMTK_ENV, capture_output=True, text=True,
                timeout=60)
            assert run.returncode == 0, run.stderr


def queue_one(state: StateDir, store: Store, src: Path) -> str:
    """One object in the outbox, as if a worker had de-identified it."""
    meta = dcmread(src, stop_before_pixels=True)
    ts = str(meta.file_meta.TransferSyntaxUID)
    store.add_job("job1", calling_ae="MOD", called_ae="GANTRY", peer="127.0.0.1",
                  sop_hash="H", sop_class_uid=str(meta.SOPClassUID), transfer_syntax=ts,
                  size=src.stat().st_size)
    store.claim_jobs("test")
    shutil.copy(src, state.output("job1"))
    store.finish_processing("job1", route="all", profile="default", new_study_uid="2.25.1",
                            new_series_uid="2.25.2", new_sop_uid=str(meta.SOPInstanceUID),
                            out_transfer_syntax=ts, counts={}, not_backed_up=(),
                            destinations=("pacs",))
    return "job1"


def test_a_destination_whose_certificate_does_not_verify_gets_nothing(pki, tmp_path,
                                                                      tls_storescp):
    scp = tls_storescp()
    cfg = parse_config({"destinations": {"pacs": {
        "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port, "backoff_seconds": 0.05,
        "max_backoff_seconds": 0.2, "tls": {
            "ca_certificates": str(pki / "rogue-ca.pem"),
            "certificate": str(pki / "gantry.pem"), "private_key": str(pki / "gantry.key")}}}},
        "<test>")
    state = StateDir(tmp_path / "state")
    store = Store(state.db)
    job = queue_one(state, store, make_objects(tmp_path / "in", 1)[0][0])
    stop = threading.Event()
    box = Outbox("pacs", cfg.destinations["pacs"], state, calling_ae="GANTRY", stop=stop,
                 poll=0.01, tls=client_context(cfg, "pacs"))
    box.start()
    try:
        def error() -> str:
            return store.deliveries(job)[0]["error"] or ""
        assert wait_for(lambda: f"TLS handshake with 127.0.0.1:{scp.port} failed" in error(),
                        60), error()
        assert "certificate verify failed" in error()
    finally:
        stop.set()
        box.join(10)
        store.close()
    assert scp.files() == []


def test_tls_files_are_checked_at_start_with_the_key_named(pki, tmp_path):
    def load(network_tls=None, dest_tls=None):
        data: dict = {"network": {"tls": network_tls}} if network_tls else {}
        if dest_tls:
            data["destinations"] = {"pacs": {"ae_title": "PACS", "host": "h", "port": 104,
                                             "tls": dest_tls}}
        cfg = parse_config(data, str(tmp_path / "gantry.yaml"))
        return server_context(cfg) if network_tls else client_context(cfg, "pacs")

    missing = server_tls(pki) | {"certificate": str(tmp_path / "nope.pem")}
    with pytest.raises(ConfigError, match=r"gantry.yaml: network.tls.certificate: cannot read"):
        load(missing)
    mismatched = server_tls(pki) | {"private_key": str(pki / "pacs.key")}
    with pytest.raises(ConfigError, match=r"network.tls: certificate .* do not load together"):
        load(mismatched)
    with pytest.raises(ConfigError, match=r"destinations.pacs.tls.ca_certificates: .* no CA"):
        load(dest_tls={"ca_certificates": str(pki / "gantry.key")})
    with pytest.raises(ConfigError, match="require_client_certificate needs ca_certificates"):
        load(server_tls(pki) | {"require_client_certificate": True})
    (tmp_path / "rel").mkdir()
    shutil.copy(pki / "ca.pem", tmp_path / "ca.pem")  # relative to the configuration file
    assert load(dest_tls={"ca_certificates": "ca.pem"}) is not None
