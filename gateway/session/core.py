"""`Session`: a curation session over a dump of an archive, kept in one SQLite file.

ingest → examine → configure → back up → anonymize → redact → verify → export, from a notebook
or the shell, stopped and resumed at will: everything lives in the session database
(gateway.session.db), and each step runs the one pipeline (gateway.pipeline).
"""

from __future__ import annotations

import os

from gateway.session import ingest as _ingest
from gateway.session.db import get_meta, open_db, set_meta

# Not `typing.TYPE_CHECKING`: importing typing, like navigation's dataclasses or pathlib, costs a
# re-ingest of an unchanged tree a tenth of its time. The engine is imported by the steps that
# use it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from gateway.config import Config
    from gateway.risk import RiskReport
    from gateway.session import export as _export
    from gateway.session import inventory, navigate, stage

EMBEDDED = "<embedded default>"


class Session:
    """A session database at `path`, opened or created (0600). `workers`: processes for the
    steps that read files (default: all cores); `progress`: a progress bar on a terminal."""

    def __init__(self, path: str | os.PathLike, *, workers: int | None = None,
                 progress: bool = True) -> None:
        self._path = os.path.realpath(path)
        self.workers, self.progress = workers, progress
        self.db = open_db(self._path)

    @property
    def path(self) -> Path:
        """The session database's absolute path."""
        from pathlib import Path

        return Path(self._path)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({str(self.path)!r}, {len(self.instances)} instances)"

    # ------------------------------------------------------------------ configuration

    @property
    def config(self) -> Config:
        """The configuration in force: the one loaded last (else the embedded default), with
        the backup turned on by `backup_identities`."""
        import dataclasses
        import json

        import yaml

        from gateway.config import BackupConfig, load_config, parse_config

        text, source = get_meta(self.db, "config_text"), get_meta(self.db, "config_source")
        config = load_config(None) if text is None else parse_config(yaml.safe_load(text),
                                                                     source or EMBEDDED)
        recipients = get_meta(self.db, "backup_recipients")
        if recipients:
            config = dataclasses.replace(
                config, backup=BackupConfig(True, tuple(json.loads(recipients))))
        return config

    @property
    def config_hash(self) -> str | None:
        """SHA-256 of the configuration text in force (None: the embedded default)."""
        return get_meta(self.db, "config_sha256")

    def load_config(self, path: str | os.PathLike) -> Config:
        """Check the YAML file at `path` (errors name the file, key and problem) and make it
        the configuration in force; its text and a hash of it are kept in the session."""
        import hashlib
        from pathlib import Path

        from gateway.config import load_config

        source = Path(path).resolve()
        config = load_config(source)
        text = source.read_text()
        set_meta(self.db, config_text=text, config_source=str(source),
                 config_sha256=hashlib.sha256(text.encode()).hexdigest())
        return config

    def backup_identities(self, recipients: list[str | os.PathLike]) -> None:
        """Seal the original values in every object from now on (Encrypted Attributes
        Sequence), for these recipients' certificates (checked now)."""
        import json
        from pathlib import Path

        from gateway.recipients import load_certificates

        paths = [str(Path(p).resolve()) for p in recipients]
        load_certificates(paths)  # RecipientError names a missing or unsuitable file
        set_meta(self.db, backup_recipients=json.dumps(paths))

    enable_reversible_anonymization = backup_identities

    # ------------------------------------------------------------------ index

    def ingest(self, path: str | os.PathLike) -> _ingest.IngestSummary:
        """Index a file or folder tree (headers only); see gateway.session.ingest."""
        return _ingest.ingest(self.db, path, self.workers, self.progress)

    @property
    def patients(self) -> navigate.Listing[navigate.Patient]:
        from gateway.session import navigate

        return navigate.patients(self.db)

    @property
    def studies(self) -> navigate.Listing[navigate.Study]:
        from gateway.session import navigate

        return navigate.studies(self.db)

    @property
    def series(self) -> navigate.Listing[navigate.Series]:
        from gateway.session import navigate

        return navigate.series(self.db)

    @property
    def instances(self) -> navigate.Listing[navigate.Instance]:
        from gateway.session import navigate

        return navigate.instances(self.db)

    def dataframe(self) -> Any:
        """The instances as a pandas DataFrame (needs the extra `gantry[pandas]`)."""
        from gateway.session import navigate

        return navigate.dataframe(self.db)

    def examine(self) -> inventory.Inventory:
        """The machine inventory of the instances under the configuration in force."""
        from gateway.session import inventory

        return inventory.examine(self.db, self.config, self.workers, self.progress)

    def scaffold_config(self, path: str | os.PathLike) -> Path:
        """Write a complete commented configuration for these instances to `path` (a new file):
        the research defaults, the backup section, a redaction entry per machine prefilled
        from CTP's library (gateway.scaffold). `load_config` accepts it unchanged."""
        from pathlib import Path

        from gateway.dicomio import DicomReadError, read_header
        from gateway.scaffold import scaffold_index, scaffold_yaml

        target = Path(path)
        if target.exists():
            raise FileExistsError(f"{target}: exists; not overwriting")
        index = scaffold_index(self.config)
        for instance in self.instances:
            try:
                index.add(read_header(instance.path))
            except DicomReadError:  # changed since ingest
                index.unreadable += 1
        target.write_text(scaffold_yaml(index, self.path.name))
        return target

    setup_config = scaffold_config

    def audit(self) -> RiskReport:
        """The risk of every file under the configuration in force (gateway.risk.RiskReport),
        rolled up per series, study, patient and the session; unreadable files are UNREADABLE."""
        from gateway.config import ConfigError
        from gateway.risk import audit_paths
        from gateway.sitekey import SiteKeyError, load_site_key

        config = self.config
        try:
            key: bytes | None = load_site_key(config)  # names groups as the output will
        except (ConfigError, SiteKeyError):
            key = None
        paths = [row[0] for row in self.db.execute(
            "SELECT path FROM files WHERE state != 'missing' AND duplicate_of IS NULL "
            "ORDER BY path")]
        return audit_paths(paths, config, key, label=self.path.name)

    def qc(self, *, output: bool = False, slices: int = 5) -> Any:
        """Fleet QC (gateway.qc.QCResult) of the session's originals, or with `output` of what
        its latest export wrote (its machines named by their keyed serial numbers)."""
        return self._qc(self._report_objects(keyed=output), output, slices)

    @staticmethod
    def _qc(objects: list, output: bool, slices: int = 5) -> Any:
        from gateway.qc import fleet_qc

        if not output:
            return fleet_qc([o.original for o in objects if o.original], slices=slices)
        return fleet_qc([o.output for o in objects if o.output], slices=slices,
                        machines={str(o.output): o.machine for o in objects if o.output})

    def _report_objects(self, keyed: bool = False) -> list:

        from gateway.session.report import report_objects
        from gateway.sitekey import load_site_key

        return report_objects(self.db, self.config,
                              load_site_key(self.config) if keyed else None)

    def report(self, path: str | os.PathLike, *, output_only: bool = False) -> Path:
        """Write the visual report (gateway.qc.report) to `path`: counts, the audit's risk
        bands, quarantine reasons, fleet QC and contact sheets. With `output_only` it is made
        from the latest export's de-identified objects alone, scanners named by a keyed hash of
        their serial number; otherwise it shows originals (patient data) and says so at its top."""
        from collections import Counter

        from gateway.qc.report import write_report

        objects = self._report_objects(keyed=output_only)
        qc = self._qc(objects, output_only)
        bands = Counter(r.band for r in self.audit().walk("instance"))
        return write_report(path, objects, qc=qc, risk=sorted(bands.items()),
                            output_only=output_only, title=f"Gantry report: {self.path.name}")

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint(self, name: str) -> stage.Checkpoint:
        from gateway.session import stage
        from gateway.sitekey import load_site_key

        config = self.config
        key = load_site_key(config)
        stage.stage_files(self.db, config, key, self.workers, self.progress)
        return stage.checkpoint(self.db, name, config, key)

    def anonymize_metadata(self) -> stage.Checkpoint:
        """What the profile changes in each file (elements and action counts, no values)."""
        return self._checkpoint("anonymize")

    apply_remediation = anonymize_metadata

    def redact_pixels(self) -> stage.Checkpoint:
        """Which files are at risk of burned-in text, the rule and regions that cover each,
        and which would be quarantined for want of one."""
        return self._checkpoint("redact")

    def verify(self) -> stage.Checkpoint:
        """The gatekeeper's verdict on each file and what the inspector still finds."""
        return self._checkpoint("verify")

    def export(self, out: str | os.PathLike, safe: bool = True) -> _export.ExportSummary:
        """Write every file through the pipeline into `out`, refused originals into
        `out`-quarantine; resumable (see gateway.session.export). The gatekeeper (verify)
        always runs: `safe=False` is refused."""
        if not safe:
            raise ValueError("export always runs the gatekeeper (verify) and refuses what it "
                             "refuses; there is no safe=False")
        from pathlib import Path

        from gateway.session import export as _export
        from gateway.sitekey import load_site_key

        config = self.config
        return _export.export(self.db, self.path, Path(out), config, load_site_key(config),
                              self.workers, self.progress)

    export_data = export
