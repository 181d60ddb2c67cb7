"""A running node (`gantry serve`) sends its IHE ATNA audit messages to real syslog collectors
on loopback: UDP, and TLS with certificates made by openssl. dcmtk storescu is the modality,
storescp the research PACS, echoscu an unknown caller."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import threading

from lxml import etree
from nethelpers import (
    DCMTK_ENV,
    identifiers_in,
    make_objects,
    need,
    storescu,
    wait_for,
    write_config,
)
from pki import collector_pki

from gateway import atna
from gateway.store import DELIVERED, PURGED, QUARANTINED

SCHEMA = etree.RelaxNG(etree.fromstring(atna.schema_text()))


def body(message: bytes) -> bytes:
    """The XML of one RFC 5424 message (after the header, '-' for no structured data, BOM)."""
    fields = message.split(b" ", 7)
    assert fields[0] == b"<85>1" and fields[5] == b"IHE+RFC-3881" and fields[6] == b"-"
    assert fields[7].startswith(b"\xef\xbb\xbf")
    return fields[7][3:]


def kind(xml: bytes) -> str:
    """'EventID/EventTypeCode/outcome' of a message, after validating it against the schema."""
    doc = etree.fromstring(xml)
    assert SCHEMA.validate(doc), SCHEMA.error_log
    ident = doc.find("EventIdentification")
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    return "/".join([ident.find("EventID").get("csd-code"), *types,
                     ident.get("EventOutcomeIndicator")])


class UdpCollector:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.messages: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                self.messages.append(self.sock.recvfrom(65536)[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


def gantry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=180)


def test_a_running_node_audits_what_it_does_to_a_udp_collector(tmp_path, storescp, gateway):
    collector = UdpCollector()
    pacs = storescp()
    objs = make_objects(tmp_path / "in", 2, studies=1, modality="CT") + \
        make_objects(tmp_path / "in2", 1, studies=1, modality="MR")
    config = write_config(
        tmp_path, {"pacs": ("PACS", pacs.port)},
        routes=[{"name": "ct", "tags": {"Modality": "CT"}, "destinations": ["pacs"]}],
        audit={"syslog": f"udp://127.0.0.1:{collector.port}"}, workers=1)
    text = config.read_text().replace(
        "network:\n", "network:\n  allowed_callers: [{ae_title: MODALITY}]\n", 1)
    config.write_text(text)
    log = tmp_path / "log.jsonl"
    try:
        gw = gateway(config, log)
        assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
        rejected = subprocess.run([need("echoscu"), "-aet", "INTRUDER", "-aec", "GANTRY",
                                   "127.0.0.1", str(gw.port)], env=DCMTK_ENV,
                                  capture_output=True, text=True, timeout=60)
        assert rejected.returncode != 0
        store = gw.store()
        assert wait_for(lambda: store.counts() == {DELIVERED: 2, QUARANTINED: 1})
        (job,) = [r["id"] for r in store.quarantined()]
        assert gantry("quarantine", "release", job, "--config", str(config)).returncode == 0
        assert wait_for(lambda: store.job(job)["state"] == QUARANTINED
                        and len(store.events(job)) > 4)
        assert gantry("quarantine", "purge", job, "--config", str(config)).returncode == 0
        assert wait_for(lambda: store.job(job)["state"] == PURGED)
        store.close()
        assert wait_for(lambda: sum(b"PURGED" in m for m in collector.messages))
        assert gw.stop() == 0
        assert wait_for(lambda: sum(b'"110121"' in m for m in collector.messages))
    finally:
        collector.close()
    bodies = [body(m) for m in collector.messages]
    kinds = [kind(b) for b in bodies]
    assert kinds[0] == "110100/110120/0" and kinds[-1] == "110100/110121/0"  # start, stop
    assert kinds.count("110114/110122/0") == kinds.count("110114/110123/0") >= 1  # associations
    assert kinds.count("110113/110126/4") == 1  # the intruder
    assert kinds.count("110104/RECEIVED/0") == 3
    assert kinds.count("110103/DEIDENTIFIED/0") == 2
    assert kinds.count("110104/0") == 2  # transferred to the PACS
    assert kinds.count("110103/QUARANTINED/4") == 2  # no route, and again after the release
    assert kinds.count("110103/RELEASED/0") == 1 and kinds.count("110105/PURGED/0") == 1
    intruder = etree.fromstring(bodies[kinds.index("110113/110126/4")])
    assert "AETITLES=INTRUDER" in [p.get("AlternativeUserID")
                                   for p in intruder.findall("ActiveParticipant")]
    # Objects are named by new UIDs and keyed hashes: no planted identifier, no original UID.
    every = b"\n".join(bodies).decode()
    assert not identifiers_in(every, {uid for _, uid in objs})
    for b in bodies:
        for detail in etree.fromstring(b).iter("ParticipantObjectDetail"):
            assert not identifiers_in(base64.b64decode(detail.get("value")).decode())


def test_a_running_node_audits_over_tls_to_a_collector_it_trusts(tmp_path, storescp, gateway):
    d = collector_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "collector.pem", d / "collector.key")
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            buffer = b""
            while chunk := conn.recv(65536):
                buffer += chunk
                while b" " in buffer:  # RFC 5425 octet counting: "LEN SP MSG"
                    length, rest = buffer.split(b" ", 1)
                    if len(rest) < int(length):
                        break
                    received.append(rest[:int(length)])
                    buffer = rest[int(length):]

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    pacs = storescp()
    objs = make_objects(tmp_path / "in", 1, modality="CT")
    config = write_config(tmp_path, {"pacs": ("PACS", pacs.port)}, workers=1, audit={
        "syslog": f"tls://127.0.0.1:{listener.getsockname()[1]}",
        "ca_certificates": str(d / "ca.pem")})
    try:
        gw = gateway(config, tmp_path / "log.jsonl")
        assert storescu(gw.port, [p for p, _ in objs]).returncode == 0
        assert wait_for(lambda: sum(b"<EventID csd-code=\"110104\"" in m and
                                    b"RECEIVED" not in m for m in received))
        assert gw.stop() == 0
        assert wait_for(lambda: sum(b'"110121"' in m for m in received))
    finally:
        listener.close()
    kinds = [kind(body(m)) for m in received]
    assert kinds[0] == "110100/110120/0" and kinds[-1] == "110100/110121/0"
    assert {"110114/110122/0", "110104/RECEIVED/0", "110103/DEIDENTIFIED/0", "110104/0",
            "110114/110123/0"} <= set(kinds)
    assert not identifiers_in(b"\n".join(received).decode(), {uid for _, uid in objs})
