"""IHE ATNA audit messages: every kind validates against the shipped schema (PS3.15 A.5.1),
names objects only by new UIDs and keyed hashes, and reaches a real syslog collector over UDP
(RFC 5426) and TLS (RFC 5425, certificates made by openssl)."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from lxml import etree
from pki import collector_pki

from gateway import atna
from gateway.config import ConfigError, parse_config
from gateway.net.syslog import PRI, Collector, SyslogSender, tls_context

NODE = atna.Node("GANTRY", "gw01", 4242)
MODALITY = atna.Peer("CT_SCANNER", "10.1.2.3")
PACS = atna.Peer("RESEARCH", "pacs.example.org")
REF = atna.ObjectRef("9f1c2e3d4b5a69788796a5b4c3d2e1f0",
                     sop_hash="a1b2c3d4e5f60718293a4b5c6d7e8f90",
                     sop_class="1.2.840.10008.5.1.4.1.1.2",
                     new_study_uid="2.25.123456789012345678901234567890",
                     new_sop_uid="2.25.987654321098765432109876543210")
AT = 1765000000.25

KINDS = {
    "application-start": lambda: atna.application_activity(NODE, True, AT),
    "application-stop": lambda: atna.application_activity(NODE, False, AT),
    "association-start": lambda: atna.association(NODE, MODALITY, True, AT),
    "association-stop": lambda: atna.association(NODE, MODALITY, False, AT),
    "rejected-caller": lambda: atna.rejected(NODE, atna.Peer("INTRUDER", "10.9.9.9"),
                                             "association rejected", AT),
    "received": lambda: atna.received(NODE, MODALITY, REF, AT),
    "deidentified": lambda: atna.deidentified(NODE, REF, AT),
    "transferred": lambda: atna.transferred(NODE, PACS, REF, AT),
    "quarantined": lambda: atna.quarantined(NODE, REF, "no route: modality CT", AT),
    "released": lambda: atna.released(NODE, REF, AT),
    "purged": lambda: atna.purged(NODE, REF, AT),
}
# kind → (EventID, EventActionCode, EventOutcomeIndicator, EventTypeCode)
EXPECTED = {
    "application-start": ("110100", "E", "0", "110120"),
    "application-stop": ("110100", "E", "0", "110121"),
    "association-start": ("110114", "E", "0", "110122"),
    "association-stop": ("110114", "E", "0", "110123"),
    "rejected-caller": ("110113", "E", "4", "110126"),
    "received": ("110104", "C", "0", "RECEIVED"),
    "deidentified": ("110103", "C", "0", "DEIDENTIFIED"),
    "transferred": ("110104", "R", "0", None),
    "quarantined": ("110103", "U", "4", "QUARANTINED"),
    "released": ("110103", "U", "0", "RELEASED"),
    "purged": ("110105", "D", "0", "PURGED"),
}


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.fromstring(atna.schema_text()))


def check(schema: etree.RelaxNG, xml: bytes) -> etree._Element:
    doc = etree.fromstring(xml)
    assert schema.validate(doc), schema.error_log
    return doc


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_message_is_valid_and_says_what_happened(schema, kind):
    doc = check(schema, KINDS[kind]())
    ident = doc.find("EventIdentification")
    event_id, action, outcome, type_code = EXPECTED[kind]
    assert ident.find("EventID").get("csd-code") == event_id
    assert ident.get("EventActionCode") == action
    assert ident.get("EventOutcomeIndicator") == outcome
    assert ident.get("EventDateTime") == "2025-12-06T05:46:40.250Z"
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    assert types == ([type_code] if type_code else [])
    assert doc.find("AuditSourceIdentification").get("AuditSourceID") == "GANTRY@gw01"
    participants = doc.findall("ActiveParticipant")
    # A.5.3.1: the application itself is no requestor; elsewhere exactly one party asked.
    requestors = 0 if kind.startswith("application") else 1
    assert sum(p.get("UserIsRequestor") == "true" for p in participants) == requestors


def test_objects_are_named_by_new_uids_and_keyed_hashes(schema):
    doc = check(schema, atna.deidentified(NODE, REF, AT))
    original, new = doc.findall("ParticipantObjectIdentification")
    assert original.get("ParticipantObjectID") == REF.sop_hash
    assert original.find("ParticipantObjectIDTypeCode").get("codeSystemName") == "99GANTRY"
    assert original.get("ParticipantObjectDataLifeCycle") == "7"  # de-identification
    assert new.get("ParticipantObjectID") == REF.new_study_uid
    assert new.find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
    assert new.find("SOPClass/Instance").get("UID") == REF.new_sop_uid
    assert new.find("Anonymized").text == "true"
    detail = new.find("ParticipantObjectDetail")
    assert base64.b64decode(detail.get("value")).decode() == REF.job
    transferred = check(schema, atna.transferred(NODE, PACS, REF, AT))
    dest = [p for p in transferred.findall("ActiveParticipant")
            if p.find("RoleIDCode").get("csd-code") == "110152"]
    assert dest[0].get("NetworkAccessPointID") == "pacs.example.org"
    assert dest[0].get("NetworkAccessPointTypeCode") == "1"  # a machine name, not an IP


@pytest.mark.parametrize("breakage", [
    (b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="3"'),
    (b'EventActionCode="C"', b'EventActionCode="X"'),
    (b"<EventID ", b"<EventIdentifier "),
    (b'UserIsRequestor="true"', b'UserIsRequestor="maybe"'),
    (b'ParticipantObjectTypeCodeRole="3"', b'ParticipantObjectTypeCodeRole="25"'),
    (b'<Instance UID="2.25.', b'<Instance UID="PLANTED.'),
], ids=["outcome", "action", "event-id", "requestor", "role", "uid"])
def test_the_schema_refuses_what_a5_does_not_allow(schema, breakage):
    good = atna.deidentified(NODE, REF, AT)
    assert breakage[0] in good
    assert not schema.validate(etree.fromstring(good.replace(*breakage, 1)))


@pytest.mark.parametrize("url, problem", [
    ("tcp://collector:514", "udp:// or tls://"),
    ("udp://collector", "udp://HOST:PORT"),
    ("tls://:6514", "udp://HOST:PORT"),
])
def test_a_bad_collector_is_refused_with_the_key(url, problem):
    with pytest.raises(ConfigError) as info:
        parse_config({"audit": {"syslog": url}}, "site.yaml")
    assert str(info.value).startswith("site.yaml: audit: ") and problem in str(info.value)
    with pytest.raises(ConfigError, match="certificates are for tls://"):
        parse_config({"audit": {"syslog": "udp://h:514", "ca_certificates": "ca.pem"}}, "s")


# ------------------------------------------------------------------ real collectors


def parse_syslog(message: bytes) -> tuple[list[str], bytes]:
    """RFC 5424: (header fields, MSG without its BOM)."""
    fields = message.split(b" ", 7)
    assert fields[6] == b"-"  # no structured data
    body = fields[7]
    assert body.startswith(b"\xef\xbb\xbf")
    return [f.decode() for f in fields[:6]], body[3:]


def test_messages_reach_a_udp_collector_as_rfc5424(schema):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(30)
        sender = SyslogSender(Collector.parse(f"udp://127.0.0.1:{collector.getsockname()[1]}"))
        for kind in ("application-start", "received", "transferred"):
            sender.send(KINDS[kind]())
        got = [collector.recvfrom(65536)[0] for _ in range(3)]
        assert sender.close()
    for datagram, kind in zip(got, ("application-start", "received", "transferred"),
                              strict=True):
        header, body = parse_syslog(datagram)
        assert header[0] == f"<{PRI}>1" and header[3] == "gantry" and header[5] == "IHE+RFC-3881"
        assert body == KINDS[kind]()
        check(schema, body)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, and a collector certificate for 127.0.0.1 signed by it (openssl)."""
    return collector_pki(tmp_path_factory.mktemp("pki"))


class TlsCollector:
    """A syslog-over-TLS collector (RFC 5425 octet counting) on loopback, in a thread."""

    def __init__(self, pki: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "collector.pem", pki / "collector.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.messages: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                conn = self.context.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            buffer = b""
            with conn:
                while chunk := conn.recv(65536):
                    buffer += chunk
                    while b" " in buffer:
                        length, rest = buffer.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        self.messages.append(rest[:int(length)])
                        buffer = rest[int(length):]

    def wait(self, n: int, timeout: float = 60) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self.listener.close()


def test_messages_reach_a_tls_collector_and_an_untrusted_one_gets_nothing(schema, pki):
    collector = TlsCollector(pki)
    try:
        url = Collector.parse(f"tls://127.0.0.1:{collector.port}")
        sender = SyslogSender(url, tls_context(str(pki / "ca.pem"), None, None))
        sender.send(KINDS["deidentified"]())
        sender.send(KINDS["purged"]())
        got = collector.wait(2)
        assert sender.close()
        assert [parse_syslog(m)[1] for m in got] == [KINDS["deidentified"](), KINDS["purged"]()]
        # A collector whose certificate the node does not trust is never sent a message.
        stranger = SyslogSender(url, tls_context(None, None, None))  # system CAs only
        stranger.send(KINDS["purged"]())
        assert not stranger.close(timeout=2)
        assert len(collector.messages) == 2
    finally:
        collector.close()
