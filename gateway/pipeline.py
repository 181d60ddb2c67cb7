"""One object through the stages: read → redaction decision → remediate → back up → redact
pixels (by rule, or by OCR for at-risk objects no rule covers when `on_risk: ocr`) → stamp →
verify (the header, and after any redaction the pixels, read again by OCR) → write. The result
is an explicit value: Forwarded or Quarantined.

The network worker and the batch command both call `Pipeline.process`; nothing here logs or
touches the network or the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from gateway.config import BackupConfig, Config, ConfigError
from gateway.deid.keyed import keyed_hash
from gateway.deid.ocr import IdentifierTokens, OcrUnavailable, check_available
from gateway.deid.overlays import clear_bits, embedded_overlay_bits
from gateway.deid.profile import Profile
from gateway.deid.redact import Decision, RedactionError, Redactor
from gateway.deid.remediate import remediate
from gateway.deid.stamp import stamp
from gateway.deid.values import stored_text, transfer_syntax
from gateway.deid.verify import verify
from gateway.dicomio import (
    DicomReadError,
    Parsed,
    is_transient,
    load_pixels,
    parse_problem,
    read_for_deid,
    write,
)
from gateway.outcome import Forwarded, Outcome, Quarantined  # noqa: F401 - and re-exported
from gateway.safetext import safe_message

CLEAN_PIXEL_DATA = "113101"
SOP_CLASS_UID, SOP_INSTANCE_UID = 0x00080016, 0x00080018
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E


@dataclass(frozen=True)
class Staged:
    """An object through every stage but the write: `parsed.ds` is the de-identified dataset."""

    parsed: Parsed
    decision: Decision
    counts: dict[str, int]
    not_backed_up: tuple[str, ...]
    original_sop_hash: str


Destination = Path | Callable[[Dataset], Path]


def layout_path(root: Path) -> Callable[[Dataset], Path]:
    """Output laid out by new study / series UID: ROOT/study/series/sop.dcm."""

    def place(ds: Dataset) -> Path:
        sop = stored_text(ds, SOP_INSTANCE_UID)
        if not sop:
            raise ValueError("no (0008,0018) SOP Instance UID to name the file by")
        study = stored_text(ds, STUDY_INSTANCE_UID) or "no-study"
        series = stored_text(ds, SERIES_INSTANCE_UID) or "no-series"
        return root / study / series / f"{sop}.dcm"

    return place


class Pipeline:
    """The de-identification stages for one configuration and site key."""

    def __init__(self, config: Config, site_key: bytes) -> None:
        """Compile every profile, redaction rule and recipient certificate now, so that a bad
        configuration fails at start rather than quarantining every object."""
        self.config = config
        self.key = site_key
        self._profiles = {name: Profile.from_config(config.profile_named(name))
                          for name in ("default", *config.profiles)}
        self.redactor = Redactor(config.redaction, config.base_dir)
        if self.redactor.rules or "ocr" in (config.redaction.on_risk,
                                           *(r.burned_in for r in config.routes)):
            try:  # every redaction is checked by OCR, and `ocr` needs it: fail at start
                check_available()
            except OcrUnavailable as exc:
                raise ConfigError(config.source, "redaction", str(exc)) from None
        backups = [b for b in (config.backup, *(r.backup for r in config.routes if r.backup))
                   if b.enabled]
        self._certificates = {}
        if backups:  # cryptography is imported only by a configuration that backs up
            from gateway.recipients import load_certificates

            self._certificates = {b.recipients: load_certificates(b.recipients, config.base_dir)
                                  for b in backups}

    def profile(self, name: str) -> Profile:
        return self._profiles[name]

    def read(self, src: Path) -> Parsed | Quarantined:
        """The file `src` read for the stages, or why it cannot be. An OS error that says the
        machine is short of something (`dicomio.is_transient`: no memory) is raised."""
        try:
            return read_for_deid(src)
        except DicomReadError as exc:
            return Quarantined(f"{exc.kind}: {exc.problem}")

    def process(self, src: Path, dst: Destination, **options: Any) -> Outcome:
        """Read the file `src` and `run` every stage on it. An OS error that says the machine
        is short of something (`dicomio.is_transient`: a full disk) is raised, not an outcome."""
        parsed = self.read(src)
        if isinstance(parsed, Quarantined):
            return parsed
        return self.run(parsed, dst, **options)

    def stage(self, parsed: Parsed, *, profile: str = "default",
              backup: BackupConfig | None = None, burned_in: str | None = None,
              decision: Decision | None = None) -> Staged | Quarantined:
        """Every stage but the write, on an object already read: `parsed.ds` becomes the
        de-identified dataset (pixels loaded only if redacted), or the reason it must not leave.
        `decision` is the redactor's for this header when the caller has already asked for it."""
        backup = backup if backup is not None else self.config.backup
        prof = self.profile(profile)
        try:
            if decision is None:
                decision = self.redactor.decide(parsed.ds)
            policy = burned_in or self.config.redaction.on_risk
            if decision.refused and policy == "quarantine":
                return Quarantined(
                    f"burned-in text risk, no redaction rule for {decision.signature}")
            by_ocr = decision.refused and policy == "ocr"
            overlay = embedded_overlay_bits(parsed.ds) if prof.overlay_data_code == "X" else 0
            if decision.regions or by_ocr or overlay:
                load_pixels(parsed)
            ds = parsed.ds
            clear_bits(ds, overlay)  # removed overlay data: its planes in the pixel words too
            original_sop = stored_text(ds, SOP_INSTANCE_UID)
            remediation = remediate(ds, prof, self.key, keep_originals=backup.enabled)
            not_backed_up: tuple[str, ...] = ()
            if backup.enabled:
                from gateway.deid.backup import attach_backup

                cfg = self.config.profile_named(profile)
                not_backed_up = attach_backup(ds, remediation.originals,
                                              self._certificates[backup.recipients],
                                              cfg.backup_max_value_bytes)
            extra: tuple[str, ...] = ()
            # for OCR: the matcher verify uses, and its OCR-tolerant cousin (a misread letter,
            # words run together)
            identifiers = [remediation.matcher.spans,
                           IdentifierTokens(remediation.identifiers).spans] if (
                decision.regions or by_ocr) else []
            if decision.regions:
                self.redactor.redact(ds, decision)
                extra = (CLEAN_PIXEL_DATA,)
            elif by_ocr and self.redactor.redact_text(ds, identifiers):
                extra = (CLEAN_PIXEL_DATA,)
            stamp(ds, prof, extra)
            problems = verify(ds, remediation, prof)
            if decision.regions or by_ocr:  # the pixel half of verify
                problems += self.redactor.readable_text(ds, identifiers)
        except DicomReadError as exc:
            return Quarantined(f"{exc.kind}: {exc.problem}")
        except RedactionError as exc:
            return Quarantined(f"burned-in text risk, and the pixels cannot be read: {exc}")
        except Exception as exc:  # one bad object must never stop the run
            if is_transient(exc):
                raise  # the machine's state, not the object's: the caller tries again later
            return Quarantined(f"de-identification failed: {parse_problem(exc)}")
        if problems:
            return Quarantined("verify refused: " + "; ".join(problems[:5]))
        return Staged(parsed, decision, dict(remediation.counts), not_backed_up,
                      keyed_hash(self.key, original_sop, 32))

    def run(self, parsed: Parsed, dst: Destination, *, profile: str = "default",
            backup: BackupConfig | None = None, burned_in: str | None = None,
            fsync: bool = False, decision: Decision | None = None) -> Outcome:
        """Run every stage on an object already read (the gateway routes on its header first);
        write the result to `dst` (a path, or a function of the de-identified dataset giving
        one), fsync'd if asked, or say why it is quarantined. `decision` is the redactor's for
        this header when the caller has already asked for it."""
        staged = self.stage(parsed, profile=profile, backup=backup, burned_in=burned_in,
                            decision=decision)
        if isinstance(staged, Quarantined):
            return staged

        def to_dst() -> Path:
            return write(parsed, dst(parsed.ds) if callable(dst) else Path(dst), fsync=fsync)

        return self.deliver(staged, to_dst)

    def deliver(self, staged: Staged, write_out: Callable[[], Path]) -> Outcome:
        """Write a staged object with `write_out` (which returns where the file went): Forwarded,
        or Quarantined when it cannot be written (a full disk is raised: the caller tries again
        later)."""
        try:
            path = write_out()
        except Exception as exc:
            if is_transient(exc):
                raise
            return Quarantined(f"cannot write the de-identified object: {safe_message(exc)}")
        ds = staged.parsed.ds
        return Forwarded(
            path=path,
            study_uid=stored_text(ds, STUDY_INSTANCE_UID),
            series_uid=stored_text(ds, SERIES_INSTANCE_UID),
            sop_uid=stored_text(ds, SOP_INSTANCE_UID),
            sop_class_uid=stored_text(ds, SOP_CLASS_UID),
            transfer_syntax=str(transfer_syntax(ds)),
            original_sop_hash=staged.original_sop_hash,
            counts=staged.counts,
            not_backed_up=staged.not_backed_up,
            redaction_rule=staged.decision.rule,
        )
