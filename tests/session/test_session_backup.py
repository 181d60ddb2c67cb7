"""`session.backup_identities` (also `enable_reversible_anonymization`): every object exported
from then on carries its originals, sealed for the recipients, and the honest broker's key
recovers them; turning it on redoes the objects already exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

import gantry
from gateway.deid.backup import read_backup
from gateway.recipients import RecipientError, create_recipient, load_private_key


def test_backup_identities_seals_originals_in_what_follows(batch_folder: Any, tmp_path: Path,
                                                          site_key_env: bytes) -> None:
    key_path, cert_path = create_recipient("broker", tmp_path / "keys", key_bits=2048)
    out = tmp_path / "OUT"
    with gantry.Session(tmp_path / "s.gantry", workers=2, progress=False) as session:
        session.ingest(batch_folder.root / "study")
        assert session.export(out).exported == 2
        assert all("EncryptedAttributesSequence" not in pydicom.dcmread(p)
                   for p in out.rglob("*.dcm"))
        with pytest.raises(RecipientError, match="missing.pem"):
            session.backup_identities(recipients=[tmp_path / "missing.pem"])
        session.enable_reversible_anonymization(recipients=[cert_path])
        assert session.config.backup.enabled
        assert session.export(out).exported == 2  # redone: what they depend on changed
    originals = {str(pydicom.dcmread(p).PatientID) for p in (batch_folder.root / "study").iterdir()}
    key = load_private_key(key_path)
    for path in out.rglob("*.dcm"):
        sealed = read_backup(pydicom.dcmread(path), key)
        assert str(sealed.PatientID) in originals
