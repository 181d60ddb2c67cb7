"""A starting configuration for an archive: the research defaults, the backup section and a
redaction entry per machine, prefilled from CTP's library where it knows the machine.

Feed headers to `scaffold_index(...)` (its `add`), then `scaffold_yaml(index, source)` writes a
commented YAML that `load_config` accepts as it is. Only device text and counts reach it.
"""

from __future__ import annotations

import dataclasses
import json
import re

from gateway.config import DEFAULT_OPTIONS, Config, ProfileConfig
from gateway.deid.ctp_script import Signature, builtin_script_path, load_script
from gateway.deid.redact import Redactor
from gateway.examine import MachineIndex


def scaffold_index(config: Config, ctp: list[Signature] | None = None) -> MachineIndex:
    """An empty index for a scaffold: the configuration's at-risk lists but none of its rules
    (so every machine is listed), and CTP signatures (default: the shipped library) whose
    regions prefill the entries."""
    redaction = dataclasses.replace(config.redaction, rules=(), ctp_scripts=())
    return MachineIndex(Redactor(redaction), load_script(builtin_script_path())
                        if ctp is None else ctp)


def _q(value: str) -> str:
    return json.dumps(value)  # JSON strings are valid YAML scalars


def _slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-") or "machine"


def _head(index: MachineIndex, source: str) -> list[str]:
    total = sum(g.count for g in index.groups.values())
    profile = ProfileConfig()
    return [
        f"# Gantry configuration scaffolded by `gantry scaffold` from {source}:",
        f"# {total} objects, {len(index.machines)} machine signatures, {len(index.groups)} "
        "signature/size groups.",
        "# It loads as it is; `gantry config show --config FILE` prints it with every default.",
        "",
        "# The site secret behind every new UID, pseudonym and date shift (HMAC-SHA256), never",
        "# inline: `gantry keys init site.key` makes a key file (owner-only); then write",
        "# site_key: {file: site.key}.",
        "site_key: {env: GANTRY_SITE_KEY}",
        "",
        "# The research defaults: the PS3.15 Basic Application Level Confidentiality Profile with",
        "# these options. Private elements are all removed; add Retain Safe Private Option to keep",
        "# those of PS3.15 Table E.3.10-1. `options: []` is the Basic Profile alone.",
        "profile:",
        "  options:",
        *[f"    - {name}" for name in DEFAULT_OPTIONS],
        f"  date_shift_days: [{profile.date_shift_days[0]}, {profile.date_shift_days[1]}]"
        "   # dates move by a per-patient whole-day offset",
        f"  pseudonym_prefix: {_q(profile.pseudonym_prefix)}"
        "   # PatientID / PatientName: prefix + keyed hash",
        "  # Per-tag overrides: keep | clean | remove | empty | hash | replace (with value), e.g.",
        '  #   "(0008,1030)": {action: keep}',
        "  phi_tags: {}",
        "",
        "# Reversible pseudonymization: the original values sealed in each object (Encrypted",
        "# Attributes Sequence) for an honest broker's certificate (`gantry keys new-recipient",
        "# broker` makes one); only the holder of the private key can recover them.",
        "backup:",
        "  enabled: false",
        "  recipients: []   # e.g. [broker.cert.pem], needed when enabled",
        "",
    ]


def scaffold_yaml(index: MachineIndex, source: str) -> str:
    """A complete configuration: the research defaults, the backup section, and one redaction
    entry per machine signature and image size.

    Entries whose regions the CTP library knows (every object of the group matched the same
    CTP signature) are active; the others are written commented out, so that objects at risk
    stay quarantined until someone gives their machine regions.
    """
    groups = sorted(index.groups.items(), key=lambda kv: (-kv[1].count, kv[0]))
    by_name = {sig.name: sig for sig in index.ctp}
    out = _head(index, source) + [
        "# Burned-in text. Review every entry against real images before use. Entries with",
        "# regions from CTP's library are active; the others are commented out: objects at risk",
        "# from those machines stay quarantined until you give them regions ([x, y, width,",
        "# height]; negative x / y count from the right / bottom). `regions: []` declares that a",
        "# machine burns in no text. The first matching rule wins, top to bottom.",
        "redaction:",
        "  on_risk: quarantine",
    ]
    body: list[str] = []
    used: set[str] = set()
    active = 0
    for (signature, size), g in groups:
        name = _slug(g.manufacturer or "unknown", g.model or "unknown", size)
        while name in used:
            name += "-x"
        used.add(name)
        known = [n for n in g.ctp if n]
        ctp_sig = by_name.get(known[0]) if len(known) == 1 and not g.ctp[""] else None
        body.append("")
        body.append(f"    # {signature} — {size}: {g.count} objects, {g.at_risk} at risk")
        if ctp_sig is not None:
            body.append(f"    # regions from CTP {ctp_sig.name}"
                        + (f" ({ctp_sig.label})" if ctp_sig.label else ""))
            prefix = "    "
            active += 1
        else:
            if known:
                body.append(f"    # CTP signatures match only some objects: {', '.join(known)}")
            body.append("    # no known regions: fill them in and uncomment"
                        if g.at_risk else "    # not at risk: uncomment only if it burns in text")
            prefix = "    # "
        lines = [f"- name: {_q(name)}", "  match:"]
        lines.append(f"    Manufacturer: {_q(g.manufacturer)}" if g.manufacturer
                     else "    Manufacturer: {present: false}")
        lines.append(f"    ManufacturerModelName: {_q(g.model)}" if g.model
                     else "    ManufacturerModelName: {present: false}")
        if size != "-":
            rows, cols = size.split("x")
            lines += [f"    Rows: {rows}", f"    Columns: {cols}"]
        if ctp_sig is not None:
            lines.append("  regions:")
            lines += [f"    - [{x}, {y}, {w}, {h}]" for x, y, w, h in ctp_sig.regions]
        else:
            # left empty on purpose: uncommented as is, the configuration does not load
            lines.append("  regions:  # required: [[x, y, width, height], ...], or [] for none")
        body += [prefix + line for line in lines]
    out.append("  rules:" if active else "  rules: []")
    return "\n".join(out + body) + "\n"
