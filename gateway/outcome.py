"""What the pipeline makes of one object: Forwarded (written, with its new UIDs) or Quarantined
(with the reason). Plain values with no engine behind them, so that whoever only reads outcomes
(the Dask client, the batch's settling) need not import the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Forwarded:
    """The object was de-identified and written to `path`; UIDs are the new ones."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    original_sop_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    not_backed_up: tuple[str, ...] = ()
    redaction_rule: str | None = None


@dataclass(frozen=True)
class Quarantined:
    """The object must not leave: `reason` says why (and never carries an identifier)."""

    reason: str


Outcome = Forwarded | Quarantined
