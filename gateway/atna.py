"""IHE ATNA audit messages (DICOM PS3.15 A.5, XML) for what a node does: its start and stop,
associations opened and closed, callers rejected, objects received, de-identified, quarantined,
transferred, released and purged.

The messages name objects only by what the audit trail may hold: new UIDs, the keyed hash of
the original SOP Instance UID, the SOP class, the job id; never an original value. Codes are
DICOM's (CID 400-404 and the A.5.2 participant codes); what DICOM has no code for (which of
Gantry's steps happened) is an EventTypeCode in Gantry's private scheme `99GANTRY`.
`gateway/data/audit-message.rng` is the schema they are checked against.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any
from xml.etree import ElementTree as ET

DCM = "DCM"
GANTRY = "99GANTRY"
SCHEMA = "data/audit-message.rng"

# (code, scheme, meaning)
Code = tuple[str, str, str]
APPLICATION_ACTIVITY: Code = ("110100", DCM, "Application Activity")
INSTANCES_ACCESSED: Code = ("110103", DCM, "DICOM Instances Accessed")
INSTANCES_TRANSFERRED: Code = ("110104", DCM, "DICOM Instances Transferred")
STUDY_DELETED: Code = ("110105", DCM, "DICOM Study Deleted")
SECURITY_ALERT: Code = ("110113", DCM, "Security Alert")
USER_AUTHENTICATION: Code = ("110114", DCM, "User Authentication")
APPLICATION_START: Code = ("110120", DCM, "Application Start")
APPLICATION_STOP: Code = ("110121", DCM, "Application Stop")
LOGIN: Code = ("110122", DCM, "Login")
LOGOUT: Code = ("110123", DCM, "Logout")
NODE_AUTHENTICATION: Code = ("110126", DCM, "Node Authentication")
APPLICATION: Code = ("110150", DCM, "Application")
DESTINATION: Code = ("110152", DCM, "Destination Role ID")
SOURCE: Code = ("110153", DCM, "Source Role ID")
STUDY_UID: Code = ("110180", DCM, "Study Instance UID")
ORIGINAL_HASH: Code = ("SOPHASH", GANTRY, "Keyed hash of the original SOP Instance UID")
RECEIVED: Code = ("RECEIVED", GANTRY, "Received and spooled")
DEIDENTIFIED: Code = ("DEIDENTIFIED", GANTRY, "De-identified")
QUARANTINED: Code = ("QUARANTINED", GANTRY, "Quarantined")
RELEASED: Code = ("RELEASED", GANTRY, "Released from quarantine")
PURGED: Code = ("PURGED", GANTRY, "Purged from quarantine")

SUCCESS, MINOR_FAILURE = "0", "4"
GATEWAY_SOURCE_TYPE = "4"  # A.5.1 AuditSourceTypeCode: application server process tier
LIFECYCLE_DEIDENTIFICATION, LIFECYCLE_ERASURE = "7", "15"
SYSTEM_OBJECT, REPORT_ROLE = "2", "3"


@dataclass(frozen=True)
class Node:
    """This gateway node: its AE title, host name and process id."""

    ae_title: str
    host: str
    pid: int


@dataclass(frozen=True)
class Peer:
    """A remote DICOM node: its AE title and, when known, its address (IP or host name)."""

    ae_title: str
    address: str | None = None


@dataclass(frozen=True)
class ObjectRef:
    """One object as the audit may name it (new UIDs, keyed hash, class, job id)."""

    job: str
    sop_hash: str | None = None
    sop_class: str | None = None
    new_study_uid: str | None = None
    new_sop_uid: str | None = None


def schema_text() -> bytes:
    """The RELAX NG schema of the messages (package data)."""
    return resources.files("gateway").joinpath(SCHEMA).read_bytes()


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": code[1],
                                "displayName": code[2], "originalText": code[2]})


def _access_point(attrs: dict[str, str], address: str | None) -> None:
    if not address:
        return
    try:
        ipaddress.ip_address(address)
        kind = "2"  # IP address
    except ValueError:
        kind = "1"  # machine name
    attrs.update(NetworkAccessPointID=address, NetworkAccessPointTypeCode=kind)


def _participant(msg: ET.Element, user_id: str, ae_title: str, requestor: bool,
                 address: str | None = None, role: Code | None = None) -> None:
    attrs = {"UserID": user_id, "AlternativeUserID": f"AETITLES={ae_title}",
             "UserIsRequestor": "true" if requestor else "false"}
    _access_point(attrs, address)
    part = ET.SubElement(msg, "ActiveParticipant", attrs)
    if role is not None:
        _code(part, "RoleIDCode", role)


def _node(msg: ET.Element, node: Node, requestor: bool, role: Code | None = None) -> None:
    _participant(msg, str(node.pid), node.ae_title, requestor, node.host, role)


def _peer(msg: ET.Element, peer: Peer, requestor: bool, role: Code | None = None) -> None:
    _participant(msg, peer.ae_title, peer.ae_title, requestor, peer.address, role)


def _message(event: Code, action: str | None, at: float, outcome: str = SUCCESS,
             types: tuple[Code, ...] = (), description: str | None = None) -> ET.Element:
    msg = ET.Element("AuditMessage")
    attrs = {"EventDateTime": _when(at), "EventOutcomeIndicator": outcome}
    if action:
        attrs = {"EventActionCode": action, **attrs}
    ident = ET.SubElement(msg, "EventIdentification", attrs)
    _code(ident, "EventID", event)
    for t in types:
        _code(ident, "EventTypeCode", t)
    if description:
        ET.SubElement(ident, "EventOutcomeDescription").text = description
    return msg


def _source(msg: ET.Element, node: Node) -> None:
    src = ET.SubElement(msg, "AuditSourceIdentification",
                        {"AuditSourceID": f"{node.ae_title}@{node.host}"})
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": GATEWAY_SOURCE_TYPE})


def _detail(obj: ET.Element, kind: str, value: str) -> None:
    ET.SubElement(obj, "ParticipantObjectDetail",
                  {"type": kind, "value": base64.b64encode(value.encode()).decode()})


def _original(msg: ET.Element, ref: ObjectRef, lifecycle: str | None = None) -> None:
    """The object as received, by the keyed hash of its original SOP Instance UID."""
    attrs = {"ParticipantObjectID": ref.sop_hash or ref.job,
             "ParticipantObjectTypeCode": SYSTEM_OBJECT,
             "ParticipantObjectTypeCodeRole": REPORT_ROLE}
    if lifecycle:
        attrs["ParticipantObjectDataLifeCycle"] = lifecycle
    obj = ET.SubElement(msg, "ParticipantObjectIdentification", attrs)
    _code(obj, "ParticipantObjectIDTypeCode", ORIGINAL_HASH)
    _detail(obj, "GantryJob", ref.job)
    if ref.sop_class:
        ET.SubElement(obj, "SOPClass", {"UID": ref.sop_class, "NumberOfInstances": "1"})
    ET.SubElement(obj, "Anonymized").text = "false"


def _deidentified(msg: ET.Element, ref: ObjectRef) -> None:
    """The de-identified object, by its new Study and SOP Instance UIDs."""
    obj = ET.SubElement(msg, "ParticipantObjectIdentification",
                        {"ParticipantObjectID": ref.new_study_uid or "",
                         "ParticipantObjectTypeCode": SYSTEM_OBJECT,
                         "ParticipantObjectTypeCodeRole": REPORT_ROLE})
    _code(obj, "ParticipantObjectIDTypeCode", STUDY_UID)
    _detail(obj, "GantryJob", ref.job)
    attrs = {"UID": ref.sop_class} if ref.sop_class else {}
    sop = ET.SubElement(obj, "SOPClass", {**attrs, "NumberOfInstances": "1"})
    if ref.new_sop_uid:
        ET.SubElement(sop, "Instance", {"UID": ref.new_sop_uid})
    ET.SubElement(obj, "Anonymized").text = "true"


def _finish(msg: ET.Element, node: Node, *objects: Any) -> bytes:
    """Insert AuditSourceIdentification before the participant objects and serialize."""
    _source(msg, node)
    for build, args in objects:
        build(msg, *args)
    return ET.tostring(msg, encoding="utf-8", xml_declaration=True)


# ---------------------------------------------------------------------------- the messages


def application_activity(node: Node, started: bool, at: float) -> bytes:
    """The node started or stopped (A.5.3.1 Application Activity)."""
    msg = _message(APPLICATION_ACTIVITY, "E", at,
                   types=(APPLICATION_START if started else APPLICATION_STOP,))
    _node(msg, node, False, APPLICATION)
    return _finish(msg, node)


def association(node: Node, peer: Peer, opened: bool, at: float) -> bytes:
    """A caller's association was established or ended (A.5.3.12 User Authentication: Login
    and Logout of the calling application, authenticated by this node)."""
    msg = _message(USER_AUTHENTICATION, "E", at, types=(LOGIN if opened else LOGOUT,))
    _peer(msg, peer, True)
    _node(msg, node, False)
    return _finish(msg, node)


def rejected(node: Node, peer: Peer, reason: str, at: float) -> bytes:
    """A caller was refused an association (A.5.3.11 Security Alert, Node Authentication,
    failed)."""
    msg = _message(SECURITY_ALERT, "E", at, MINOR_FAILURE, (NODE_AUTHENTICATION,), reason)
    _node(msg, node, False)
    _peer(msg, peer, True)
    return _finish(msg, node)


def received(node: Node, peer: Peer, ref: ObjectRef, at: float) -> bytes:
    """An object arrived from `peer` and was spooled (A.5.3.5 DICOM Instances Transferred,
    Create)."""
    msg = _message(INSTANCES_TRANSFERRED, "C", at, types=(RECEIVED,))
    _peer(msg, peer, True, SOURCE)
    _node(msg, node, False, DESTINATION)
    return _finish(msg, node, (_original, (ref,)))


def deidentified(node: Node, ref: ObjectRef, at: float) -> bytes:
    """The object was de-identified into new instances (A.5.3.4 DICOM Instances Accessed,
    Create; the original's life cycle: de-identification)."""
    msg = _message(INSTANCES_ACCESSED, "C", at, types=(DEIDENTIFIED,))
    _node(msg, node, True, APPLICATION)
    return _finish(msg, node, (_original, (ref, LIFECYCLE_DEIDENTIFICATION)),
                   (_deidentified, (ref,)))


def transferred(node: Node, destination: Peer, ref: ObjectRef, at: float) -> bytes:
    """The de-identified object was accepted by a destination (A.5.3.5 DICOM Instances
    Transferred, Read)."""
    msg = _message(INSTANCES_TRANSFERRED, "R", at)
    _node(msg, node, True, SOURCE)
    _peer(msg, destination, False, DESTINATION)
    return _finish(msg, node, (_deidentified, (ref,)))


def quarantined(node: Node, ref: ObjectRef, reason: str, at: float) -> bytes:
    """The object was held back with a reason (DICOM Instances Accessed, Update, failed)."""
    msg = _message(INSTANCES_ACCESSED, "U", at, MINOR_FAILURE, (QUARANTINED,), reason)
    _node(msg, node, True, APPLICATION)
    return _finish(msg, node, (_original, (ref,)))


def released(node: Node, ref: ObjectRef, at: float) -> bytes:
    """An operator released the object for another pass (DICOM Instances Accessed, Update)."""
    msg = _message(INSTANCES_ACCESSED, "U", at, types=(RELEASED,))
    _node(msg, node, True, APPLICATION)
    return _finish(msg, node, (_original, (ref,)))


def purged(node: Node, ref: ObjectRef, at: float) -> bytes:
    """An operator deleted the quarantined original (A.5.3.6 DICOM Study Deleted, Delete)."""
    msg = _message(STUDY_DELETED, "D", at, types=(PURGED,))
    _node(msg, node, True, APPLICATION)
    return _finish(msg, node, (_original, (ref, LIFECYCLE_ERASURE)))
