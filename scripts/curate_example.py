"""Curating an archive from Python, checkpoint by checkpoint (the README walks the same steps).

    GANTRY_SITE_KEY=... python scripts/curate_example.py DUMP WORKDIR [--config FILE]
                                                         [--recipient CERT]

The session is WORKDIR/dump.gantry (owner-only: it indexes identifiers); the de-identified
objects go to WORKDIR/OUT and refused originals to WORKDIR/OUT-quarantine. Run it again after a
crash, or after editing the configuration: it redoes only what is left or what changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gantry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path, help="a folder tree of DICOM files")
    parser.add_argument("workdir", type=Path, help="where the session and the export go")
    parser.add_argument("--config", type=Path, help="YAML configuration (default: embedded)")
    parser.add_argument("--recipient", type=Path, action="append",
                        help="seal original values for this certificate (repeatable)")
    args = parser.parse_args()

    with gantry.Session(args.workdir / "dump.gantry") as session:
        print("1. ingest:", session.ingest(args.dump), sep="\n")          # headers only
        print(f"   {len(session.patients)} patients, {len(session.studies)} studies, "
              f"{len(session.series)} series, {len(session.instances)} instances")
        print("2. examine:", session.examine(), sep="\n")                 # machines, rules
        if args.config:
            session.load_config(args.config)                             # 3. configure
        if args.recipient:
            session.backup_identities(recipients=args.recipient)         # 4. back up
        anonymized = session.anonymize_metadata()                        # 5. anonymize
        print("5. anonymize:", anonymized, sep="\n")
        print("6. redact:", session.redact_pixels(), sep="\n")           # 6. redact
        verified = session.verify()                                      # 7. verify
        print("7. verify:", verified, sep="\n")
        for record in verified.quarantined:
            print(f"   would be quarantined: {record.path}: {record.reason}")
        result = session.export(args.workdir / "OUT")                    # 8. export
        print("8. export:", result, sep="\n")
    return 1 if result.outcomes["quarantined"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
