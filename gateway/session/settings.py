"""What an exported object depends on, as hashes, so that a configuration change redoes exactly
the objects it affects.

Every object depends on the settings (the default profile, the backup and its certificates, the
site key); an object depends on the redaction section only through its own redaction decision
(whether a rule covers it, its regions and output encoding, or its refusal). Network, routes and
destinations do not touch a batch export at all.
"""

from __future__ import annotations

import hashlib
import json

from gateway.config import Config
from gateway.deid.keyed import keyed_hash
from gateway.deid.redact import Decision, script_path
from gateway.recipients import load_certificates


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=repr).encode()).hexdigest()[:32]


def settings_hash(config: Config, key: bytes) -> str:
    """The profile, the backup (certificate contents included) and the site key (as a keyed
    fingerprint, never the key)."""
    certificates: list[str] = []
    if config.backup.enabled:
        certificates = [hashlib.sha256(der).hexdigest() for der in _certificate_bytes(config)]
    return _digest(repr(config.profile), repr(config.backup), certificates,
                   keyed_hash(key, "gantry session settings", 32))


def _certificate_bytes(config: Config) -> list[bytes]:
    from cryptography.hazmat.primitives.serialization import Encoding

    return [c.public_bytes(Encoding.DER)
            for c in load_certificates(config.backup.recipients, config.base_dir)]


def redaction_hash(config: Config) -> str:
    """The redaction section, with the contents of the CTP scripts it names."""
    scripts = []
    for script in config.redaction.ctp_scripts:
        try:
            scripts.append(hashlib.sha256(
                script_path(script, config.base_dir).read_bytes()).hexdigest())
        except OSError:
            scripts.append("unreadable")
    return _digest(repr(config.redaction), scripts)


def decision_key(decision: Decision | None, config: Config) -> str:
    """What of one object's redaction decision reaches its output."""
    if decision is None:
        return "none"
    refused = decision.refused and config.redaction.on_risk == "quarantine"
    encoding = config.redaction.output_encoding if decision.regions else ""
    return _digest(decision.rule is not None, decision.regions, refused,
                   decision.signature if refused else "", encoding)
