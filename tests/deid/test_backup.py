"""The encrypted backup: Encrypted Attributes Sequence (0400,0500) with CMS EnvelopedData."""

from __future__ import annotations

import copy
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.config import ProfileConfig
from gateway.deid.backup import (
    ENCRYPTED_ATTRIBUTES_SEQUENCE,
    ENCRYPTED_CONTENT,
    BackupError,
    attach_backup,
    read_backup,
    recover,
)
from gateway.recipients import (
    RecipientError,
    create_recipient,
    load_certificate,
    load_private_key,
    load_recipient_certificates,
)

PLANTED = ("Zyxwvut^Qponml", "PID-7731-QZ", "ACC-99173-XK")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """Two honest brokers: (key, cert, key path, cert path) each."""
    out = []
    for name in ("alice", "bob"):
        key_path, cert_path = create_recipient(name, tmp_path_factory.mktemp(name),
                                               key_bits=2048)
        out.append((load_private_key(key_path), load_certificate(cert_path), key_path,
                    cert_path))
    return out


def _item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _original() -> Dataset:
    """CT_small with planted identifiers, a nested sequence, a private block and Latin-1 text."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = PLANTED[0] + "^Müller"
    ds.PatientID = PLANTED[1]
    ds.AccessionNumber = PLANTED[2]
    ds.PatientIdentityRemoved = "NO"
    ds.ReferencedStudySequence = Sequence([
        _item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
              ReferencedSOPInstanceUID="1.2.3.4.5.6.7",
              PurposeOfReferenceCodeSequence=Sequence([_item(CodeValue="X1",
                                                             CodingSchemeDesignator="99T",
                                                             CodeMeaning="nested")]))])
    block = ds.private_block(0x00F1, "ACME SITE 1", create=True)
    block.add_new(0x01, "LO", "secret private note")
    block.add_new(0x02, "OB", b"\x01\x02\x03\x04")
    return ds


def _deidentify_by_hand(ds: Dataset) -> Dataset:
    """What remediation would hand over: the originals of every changed/removed element."""
    changed = [0x00100010, 0x00100020, 0x00080050, 0x00081110, 0x00080018, 0x00F10010,
               0x00F11001, 0x00F11002, 0x00100030]
    originals = Dataset()
    for tag in changed:
        originals.add(copy.deepcopy(ds[tag]))
    ds.PatientName = "GANTRY-1"
    ds.PatientID = "GANTRY-1"
    ds.AccessionNumber = ""
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1234"
    del ds[0x00081110], ds[0x00F10010], ds[0x00F11001], ds[0x00F11002], ds[0x00100030]
    return originals


def _stamp(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "test"
    ds.DeidentificationMethodCodeSequence = Sequence([_item(CodeValue="113100")])
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def _assert_same(original: Dataset, recovered: Dataset) -> None:
    assert sorted(recovered.keys()) == sorted(original.keys())
    for elem in original:
        got = recovered[elem.tag]
        assert (got.VR, got.value) == (elem.VR, elem.value), f"{elem.tag} differs"


def _backed_up(broker, max_bytes=1 << 20) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    original = _original()
    ds = copy.deepcopy(original)
    originals = _deidentify_by_hand(ds)
    skipped = attach_backup(ds, originals, [broker[0][1], broker[1][1]], max_bytes)
    _stamp(ds)
    return original, ds, skipped


def _roundtrip_bytes(ds: Dataset, tmp_path: Path) -> Dataset:
    path = tmp_path / "out.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


# ------------------------------------------------------------------------ hand-built originals


def test_structure_is_the_standard_one(broker, tmp_path):
    _, ds, skipped = _backed_up(broker)
    assert skipped == ()
    ds = _roundtrip_bytes(ds, tmp_path)
    (item,) = ds.EncryptedAttributesSequence
    assert item.EncryptedContentTransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds[ENCRYPTED_ATTRIBUTES_SEQUENCE][0][ENCRYPTED_CONTENT].VR == "OB"
    blob = bytes(item.EncryptedContent)
    assert blob[:2] == b"\x30\x82"  # a DER SEQUENCE: ContentInfo ...
    assert bytes.fromhex("2a864886f70d010703") in blob[:32]  # ... of id-envelopedData
    assert bytes.fromhex("60864801650304012a") in blob  # aes256-CBC


def test_recover_restores_every_original_value(broker, tmp_path):
    original, ds, _ = _backed_up(broker)
    ds = _roundtrip_bytes(ds, tmp_path)
    for key, cert, *_ in broker:
        for certificate in (cert, None):
            recovered = recover(ds, key, certificate)
            _assert_same(original, recovered)
            assert recovered.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
            assert recovered.PatientName == PLANTED[0] + "^Müller"
            assert recovered.PatientIdentityRemoved == "NO"  # was there before the stamp
            assert "LongitudinalTemporalInformationModified" not in recovered
            assert ENCRYPTED_ATTRIBUTES_SEQUENCE not in recovered
    recovered.save_as(tmp_path / "recovered.dcm", enforce_file_format=True)
    _assert_same(original, pydicom.dcmread(tmp_path / "recovered.dcm"))
    assert ds.PatientName == "GANTRY-1"  # the input is left as it was


def test_read_backup_gives_the_modified_attributes_item(broker):
    _, ds, _ = _backed_up(broker)
    originals = read_backup(ds, broker[0][0])
    assert originals.PatientID == PLANTED[1]
    assert originals.ReferencedStudySequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "X1"
    assert originals[0x00F11001].value == "secret private note"
    assert originals[0x00F10010].value == "ACME SITE 1"
    assert "DeidentificationMethod" not in originals


def test_values_over_the_cap_are_listed_not_backed_up(broker):
    original, ds, skipped = _backed_up(broker, max_bytes=16)
    # longer than 16 bytes: SOP Instance UID, the sequence, the name, the private note
    assert skipped == ("(0008,0018)", "(0008,1110)", "(0010,0010)", "(00F1,1001)")
    originals = read_backup(ds, broker[1][0])
    assert 0x00081110 not in originals and 0x00F11001 not in originals
    assert originals.PatientID == PLANTED[1]


def test_an_existing_sequence_is_extended_and_the_last_item_is_opened(broker):
    original, ds, _ = _backed_up(broker)
    second = Dataset()
    second.PatientName = "GANTRY-1"
    ds.PatientName = "SECOND"
    attach_backup(ds, second, [broker[0][1]], 1 << 20)
    assert len(ds.EncryptedAttributesSequence) == 2
    assert read_backup(ds, broker[0][0]).PatientName == "GANTRY-1"
    once = recover(ds, broker[0][0])
    assert once.PatientName == "GANTRY-1" and len(once.EncryptedAttributesSequence) == 1
    _assert_same(original, recover(once, broker[0][0]))
    # bob is no recipient of the second item: he opens the first one
    assert read_backup(ds, broker[1][0]).PatientName == PLANTED[0] + "^Müller"


def test_no_identifier_in_the_output_bytes(broker, tmp_path):
    _, ds, _ = _backed_up(broker)
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    raw = (tmp_path / "x.dcm").read_bytes()
    for planted in (*PLANTED, "secret private note", "1.2.3.4.5.6.7"):
        assert planted.encode() not in raw


# ------------------------------------------------------------------------ errors


def _flip(ds: Dataset, offset_from_end: int) -> Dataset:
    ds = copy.deepcopy(ds)
    item = ds.EncryptedAttributesSequence[0]
    blob = bytearray(item.EncryptedContent)
    blob[-offset_from_end] ^= 0x01
    item.EncryptedContent = bytes(blob)
    return ds


@pytest.mark.parametrize("offset", [1, 17, 40, 200, 300])
@pytest.mark.parametrize("with_cert", [True, False])
def test_tampered_blob_is_refused(broker, offset, with_cert):
    _, ds, _ = _backed_up(broker)
    key, cert, *_ = broker[0]
    with pytest.raises(BackupError, match="altered"):
        recover(_flip(ds, offset), key, cert if with_cert else None)


@pytest.mark.parametrize("with_cert", [True, False])
def test_the_pad_byte_of_an_odd_length_content_is_not_part_of_it(broker, with_cert):
    """The CMS blob's length depends on the recipients' certificates (a serial number's DER
    can take one byte more): when it is odd, the stored OB value ends with a pad byte."""
    _, ds, _ = _backed_up(broker)
    key, cert, *_ = broker[0]
    item = ds.EncryptedAttributesSequence[0]
    blob = bytes(item.EncryptedContent)
    intact = read_backup(ds, key, cert if with_cert else None)
    item.EncryptedContent = blob + b"\x00"  # as read back from a file when len(blob) is odd
    assert read_backup(ds, key, cert if with_cert else None) == intact


@pytest.mark.parametrize("with_cert", [True, False])
def test_a_flipped_bit_anywhere_never_yields_wrong_originals(broker, with_cert):
    """Refused, or (when the bit sits in CMS data this key does not use, such as the other
    recipient's entry) exactly the originals."""
    _, ds, _ = _backed_up(broker)
    key, cert, *_ = broker[0]
    cert = cert if with_cert else None
    intact = read_backup(ds, key, cert)
    blob = bytes(ds.EncryptedAttributesSequence[0].EncryptedContent)
    size = len(blob)
    refused = set()
    for position in range(0, size, 3):
        probe = copy.deepcopy(ds.EncryptedAttributesSequence[0])
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        probe.EncryptedContent = bytes(damaged)
        holder = Dataset()
        holder.EncryptedAttributesSequence = Sequence([probe])
        try:
            got = read_backup(holder, key, cert)
        except BackupError:
            refused.add(position)
            continue
        assert got == intact, f"a flip at byte {position} changed the originals"
    assert set(range(0, size, 3)[-100:]) <= refused  # the encrypted content's tail


def test_wrong_key_is_refused(broker, tmp_path):
    _, ds, _ = _backed_up(broker)
    key_path, cert_path = create_recipient("eve", tmp_path, key_bits=2048)
    eve, eve_cert = load_private_key(key_path), load_certificate(cert_path)
    for cert in (eve_cert, None):
        with pytest.raises(BackupError, match="cannot be decrypted with this key") as info:
            recover(ds, eve, cert)
        assert not any(p in str(info.value) for p in PLANTED)
    with pytest.raises(BackupError, match="does not belong to the given certificate"):
        recover(ds, eve, broker[0][1])


def test_missing_or_empty_sequence_is_refused(broker):
    original = _original()
    with pytest.raises(BackupError, match=r"no Encrypted Attributes Sequence \(0400,0500\)"):
        recover(original, broker[0][0])
    original.EncryptedAttributesSequence = Sequence()
    with pytest.raises(BackupError, match="empty"):
        read_backup(original, broker[0][0])
    original.EncryptedAttributesSequence = Sequence([Dataset()])
    with pytest.raises(BackupError, match=r"no Encrypted Content \(0400,0520\)"):
        read_backup(original, broker[0][0])


def test_no_certificates_is_an_error():
    ds, originals = _original(), Dataset()
    with pytest.raises(BackupError, match="no recipient certificates"):
        attach_backup(ds, originals, [], 100)
    with pytest.raises(RecipientError, match="no recipient certificates"):
        load_recipient_certificates([])


# ------------------------------------------------------------------------ openssl interop


def test_openssl_decrypts_the_content_and_pydicom_reads_it(broker, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    original, ds, _ = _backed_up(broker)
    ds = _roundtrip_bytes(ds, tmp_path)
    blob = tmp_path / "content.der"
    blob.write_bytes(bytes(ds.EncryptedAttributesSequence[0].EncryptedContent))
    _, _, key_path, cert_path = broker[1]
    plain = tmp_path / "plain.dcm"
    subprocess.run([openssl, "cms", "-decrypt", "-inform", "DER", "-in", str(blob),
                    "-recip", str(cert_path), "-inkey", str(key_path), "-out", str(plain)],
                   check=True, capture_output=True)
    decrypted = pydicom.dcmread(plain, force=True)
    (item,) = decrypted.ModifiedAttributesSequence
    assert item.PatientName == original.PatientName
    assert item.ReferencedStudySequence == original.ReferencedStudySequence
    assert item[0x00F11001].value == "secret private note"


# ------------------------------------------------------------------------ with the engine


def _charset_files() -> list[Path]:
    """pydicom's character-set files the engine takes (the shared corpus leaves them out)."""
    from gateway.dicomio import DicomReadError, read_for_deid

    found = []
    for path in sorted(Path(p) for p in get_charset_files("*.dcm")):
        try:
            read_for_deid(path)
        except DicomReadError:  # a few have no SOP Instance UID
            continue
        found.append(path)
    return found


CHARSET_FILES = _charset_files()


OPTIONS = ("Retain Safe Private Option",
           "Retain Longitudinal Temporal Information with Modified Dates Option",
           "Clean Descriptors Option", "Clean Structured Content Option")


@pytest.fixture(scope="module")
def engine():
    from gateway.deid.profile import Profile

    return Profile.from_config(ProfileConfig())


@pytest.fixture(scope="module", params=["basic", "options"])
def any_engine(request):
    """The Basic Profile, and the Basic Profile with options that keep or change values."""
    from gateway.deid.profile import Profile

    options = OPTIONS if request.param == "options" else ()
    return Profile.from_config(ProfileConfig(options=options))


def test_engine_roundtrip(corpus_file, any_engine, broker, tmp_path):
    """Every file of pydicom's test files and pydicom-data the engine takes (tests/conftest.py)."""
    _engine_roundtrip(corpus_file, any_engine, broker, tmp_path)


@pytest.mark.parametrize("src", CHARSET_FILES, ids=[p.name for p in CHARSET_FILES])
def test_engine_roundtrip_character_sets(src, any_engine, broker, tmp_path):
    _engine_roundtrip(src, any_engine, broker, tmp_path)


def _engine_roundtrip(src: Path, any_engine, broker, tmp_path: Path) -> None:
    """De-identify with the engine and the backup, recover: every original element identical
    (sequences included), nothing added, pixel data untouched."""
    from gateway.deid.remediate import remediate
    from gateway.deid.stamp import stamp
    from gateway.dicomio import DicomReadError, read_for_deid, read_full, write

    try:
        original = read_full(src)
    except DicomReadError as exc:  # the header is fine, the whole object is not
        pytest.skip(f"cannot read the whole object to compare with: {exc.problem}")
    parsed = read_for_deid(src)
    key, cert, *_ = broker[0]
    remediation = remediate(parsed.ds, any_engine, b"0123456789abcdef0123456789abcdef")
    skipped = attach_backup(parsed.ds, remediation.originals, [cert], 1 << 20)
    stamp(parsed.ds, any_engine)
    write(parsed, tmp_path / "deid.dcm")
    deidentified = read_full(tmp_path / "deid.dcm")
    recovered = recover(deidentified, key)
    missing = [f"{e.tag}" for e in original if e.tag not in recovered]
    extra = [f"{t}" for t in recovered.keys() if t not in original]
    differ = [f"{e.tag}" for e in original if e.tag in recovered
              and (recovered[e.tag].VR, recovered[e.tag].value) != (e.VR, e.value)]
    assert skipped == ()
    assert (missing, extra, differ) == ([], [], [])
    assert recovered.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    # the recovered object survives writing and reading back
    recovered.save_as(tmp_path / "rec.dcm", enforce_file_format=True)
    again = pydicom.dcmread(tmp_path / "rec.dcm")
    assert again.SOPInstanceUID == original.SOPInstanceUID
    if "PixelData" in original:
        assert again.PixelData == original.PixelData


def test_engine_output_carries_no_planted_identifier(engine, broker, tmp_path):
    from gateway.deid.remediate import remediate
    from gateway.deid.stamp import stamp
    from gateway.deid.verify import verify
    from gateway.dicomio import read_for_deid, write

    src = tmp_path / "planted.dcm"
    _original().save_as(src, enforce_file_format=True)
    parsed = read_for_deid(src)
    remediation = remediate(parsed.ds, engine, b"0123456789abcdef0123456789abcdef")
    attach_backup(parsed.ds, remediation.originals, [broker[0][1]], 1 << 20)
    stamp(parsed.ds, engine)
    assert verify(parsed.ds, remediation, engine) == []
    write(parsed, tmp_path / "out.dcm")
    raw = (tmp_path / "out.dcm").read_bytes()
    for planted in (*PLANTED, "secret private note", "Müller"):
        assert planted.encode("latin-1") not in raw
    recovered = recover(pydicom.dcmread(tmp_path / "out.dcm"), broker[0][0])
    assert recovered.PatientID == PLANTED[1]



def test_an_element_that_cannot_be_encoded_is_listed_and_the_rest_kept(broker):
    ds, originals = Dataset(), Dataset()
    originals.PatientName = "A^B"
    with warnings.catch_warnings():  # pydicom may warn about the value's type
        warnings.simplefilter("ignore")
        originals.add(DataElement(0x00101010, "AS", object()))  # fails midway through writing
    originals.PatientID = PLANTED[1]
    skipped = attach_backup(ds, originals, [broker[0][1]], 1 << 20)
    assert skipped == ("(0010,1010)",)
    back = read_backup(ds, broker[0][0])
    assert sorted(back.keys()) == [0x00100010, 0x00100020]
    assert (back.PatientName, back.PatientID) == ("A^B", PLANTED[1])


def test_engine_roundtrip_restores_attributes_the_stamp_and_dates_overwrite(engine, broker,
                                                                            tmp_path):
    from gateway.deid.remediate import remediate
    from gateway.deid.stamp import stamp
    from gateway.dicomio import read_for_deid, write

    original = _original()
    original.LongitudinalTemporalInformationModified = "UNMODIFIED"
    original.DeidentificationMethod = "an earlier curation"
    original.BurnedInAnnotation = "NO"
    src = tmp_path / "in.dcm"
    original.save_as(src, enforce_file_format=True)
    parsed = read_for_deid(src)
    remediation = remediate(parsed.ds, engine, b"0123456789abcdef0123456789abcdef")
    attach_backup(parsed.ds, remediation.originals, [broker[0][1]], 1 << 20)
    stamp(parsed.ds, engine)
    assert parsed.ds.LongitudinalTemporalInformationModified != "UNMODIFIED"
    write(parsed, tmp_path / "out.dcm")
    recovered = recover(pydicom.dcmread(tmp_path / "out.dcm"), broker[0][0])
    assert recovered.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert recovered.DeidentificationMethod == "an earlier curation"
    assert recovered.PatientIdentityRemoved == "NO"
    assert recovered.BurnedInAnnotation == "NO"
    assert "DeidentificationMethodCodeSequence" not in recovered


def test_renumbered_private_blocks_are_put_back_where_they_were(broker):
    from gateway.deid.profile import Profile
    from gateway.deid.remediate import remediate

    profile = Profile.from_config(ProfileConfig(options=("Retain Safe Private Option",)))
    original = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    original.add_new(0x00E10010, "LO", "ACME UNSAFE")
    original.add_new(0x00E11001, "LO", "secret private note")
    original.add_new(0x00E10011, "LO", "ELSCINT1")  # safe: DLP and Acquisition Duration
    original.add_new(0x00E11121, "DS", "12.5")
    original.add_new(0x00E11150, "DS", "3")
    ds = copy.deepcopy(original)
    remediation = remediate(ds, profile, b"0123456789abcdef0123456789abcdef")
    assert ds[0x00E10010].value == "ELSCINT1" and ds[0x00E11021].value == "12.5"  # renumbered
    attach_backup(ds, remediation.originals, [broker[0][1]], 1 << 20)
    recovered = recover(ds, broker[0][0])
    group = [(e.tag, e.value) for e in recovered if e.tag.group == 0x00E1]
    assert group == [(e.tag, e.value) for e in original if e.tag.group == 0x00E1]


def test_unchanged_private_elements_beside_backed_up_ones_are_kept(broker):
    original = _original()
    ds = copy.deepcopy(original)
    originals = Dataset()
    originals.add(copy.deepcopy(ds[0x00F11001]))  # only this one was changed
    ds[0x00F11001].value = "cleaned"
    attach_backup(ds, originals, [broker[0][1]], 1 << 20)
    _assert_same(original, recover(ds, broker[0][0]))


def test_openssl_decrypts_an_engine_output_file(engine, broker, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    from gateway.deid.remediate import remediate
    from gateway.deid.stamp import stamp
    from gateway.dicomio import read_for_deid, write

    src = Path(get_testdata_file("rtplan.dcm"))
    parsed = read_for_deid(src)
    remediation = remediate(parsed.ds, engine, b"0123456789abcdef0123456789abcdef")
    attach_backup(parsed.ds, remediation.originals, [broker[0][1], broker[1][1]], 1 << 20)
    stamp(parsed.ds, engine)
    write(parsed, tmp_path / "out.dcm")
    output = pydicom.dcmread(tmp_path / "out.dcm")
    blob = tmp_path / "content.der"
    blob.write_bytes(bytes(output.EncryptedAttributesSequence[0].EncryptedContent))
    original = pydicom.dcmread(src)
    for _, _, key_path, cert_path in broker:  # each recipient, independently of our code
        plain = tmp_path / f"{key_path.stem}.dcm"
        subprocess.run([openssl, "cms", "-decrypt", "-inform", "DER", "-in", str(blob),
                        "-recip", str(cert_path), "-inkey", str(key_path), "-out", str(plain)],
                       check=True, capture_output=True)
        (item,) = pydicom.dcmread(plain, force=True).ModifiedAttributesSequence
        assert item.SOPInstanceUID == original.SOPInstanceUID
        assert item.PatientName == original.PatientName
        assert item.ReferencedStructureSetSequence == original.ReferencedStructureSetSequence
        assert output.SOPInstanceUID != original.SOPInstanceUID


def test_kept_private_uids_are_remapped_and_backed_up(broker):
    """Retain Safe Private keeps (0099,xx02) NQHeader Analyzed Series UID: as a UID it is
    remapped, and the original comes back from the backup, also when nothing else in its
    private group changed."""
    from gateway.deid.profile import Profile
    from gateway.deid.remediate import remediate

    profile = Profile.from_config(ProfileConfig(options=("Retain Safe Private Option",)))
    original = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    original.add_new(0x00990010, "LO", "NQHeader")
    original.add_new(0x00991002, "UI", "1.2.826.0.1.3680043.99.1")
    ds = copy.deepcopy(original)
    remediation = remediate(ds, profile, b"0123456789abcdef0123456789abcdef")
    assert ds[0x00991002].value.startswith("2.25.")
    attach_backup(ds, remediation.originals, [broker[0][1]], 1 << 20)
    assert recover(ds, broker[0][0])[0x00991002].value == "1.2.826.0.1.3680043.99.1"
