"""The encrypted backup of original values: Encrypted Attributes Sequence (0400,0500).

PS3.3 C.12.1.1.4.1 and PS3.15 (Attribute Confidentiality Profiles): the original values of every
attribute de-identification modified or removed go into the one item of Modified Attributes
Sequence (0400,0550); that dataset is encoded in Explicit VR Little Endian (named by Encrypted
Content Transfer Syntax UID (0400,0510)), wrapped as CMS EnvelopedData (RFC 5652) for the
recipients' X.509 certificates, and stored as Encrypted Content (0400,0520) in an item of
(0400,0500).

Beside (0400,0550) the encrypted dataset carries the object's Specific Character Set, first (so
text decodes as written, and readers that guess the encoding from the first tag guess right) and,
last, a private SHA-256 digest of everything before it: CMS
EnvelopedData with AES-CBC has no integrity check, and a flipped ciphertext bit must not turn
into a silently wrong "original" value. Standard readers ignore the private element.

Pure: Datasets, certificates and keys in; Datasets out. No I/O, no identifiers in errors.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from io import BytesIO

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7
from pydicom.charset import convert_encodings
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian

from gateway.deid.tags import tag_str
from gateway.deid.vr import LONG_LENGTH_VRS

ENCRYPTED_ATTRIBUTES_SEQUENCE = 0x04000500
ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID = 0x04000510
ENCRYPTED_CONTENT = 0x04000520
MODIFIED_ATTRIBUTES_SEQUENCE = 0x04000550
SPECIFIC_CHARACTER_SET = 0x00080005

# Attributes later stages (pixel redaction, stamp) set or change after the backup is taken. Their
# values at backup time are still the originals (unless remediation recorded them itself), so they
# are backed up as they are; `recover` drops whatever de-identification left in their place.
STAGE_MANAGED = (
    0x00120062,  # Patient Identity Removed
    0x00120063,  # De-identification Method
    0x00120064,  # De-identification Method Code Sequence
    0x00280301,  # Burned In Annotation
)
# Attributes de-identification adds; absent from the backup means absent originally.
ADDED_BY_DEIDENTIFICATION = (*STAGE_MANAGED, 0x00280303)  # + Longitudinal Temporal Info Modified

# The private integrity digest: last two elements of the encrypted dataset.
_DIGEST_GROUP = 0x4001
_DIGEST_CREATOR = b"GANTRY BACKUP 1 "  # LO, even length
_DIGEST_SUFFIX_HEAD = (
    struct.pack("<HH2sH", _DIGEST_GROUP, 0x0010, b"LO", len(_DIGEST_CREATOR)) + _DIGEST_CREATOR
    + struct.pack("<HH2sHI", _DIGEST_GROUP, 0x1001, b"OB", 0, 32)
)
_DIGEST_SUFFIX_LEN = len(_DIGEST_SUFFIX_HEAD) + 32



class BackupError(ValueError):
    """The encrypted backup is missing, unreadable with this key, or altered."""


# ---------------------------------------------------------------------------- writing


def _charset(ds: Dataset) -> list[str] | str | None:
    value = ds.get(SPECIFIC_CHARACTER_SET)
    return None if value is None else value.value


def _element(originals: Dataset, tag: int, context: Dataset,
             encodings: list[str] | None) -> DataElement:
    """The element decoded (raw text in the Python `encodings` of its character set), with an
    ambiguous VR resolved from `context`."""
    elem = originals.get_item(tag)
    if isinstance(elem, RawDataElement):
        elem = convert_raw_data_element(elem, encoding=encodings, ds=originals)
    if elem.VR and len(elem.VR) != 2:
        elem = correct_ambiguous_vr_element(elem, context, True)
    if elem.VR and len(elem.VR) != 2:
        raise ValueError("ambiguous VR")
    return elem


def _encode_raw(elem: DataElement | RawDataElement) -> bytes | None:
    """A little-endian element still undecoded, encoded Explicit VR Little Endian from the bytes
    it was read as (text stays in its own character set); None when pydicom must encode it
    (sequences, UN, ambiguous or unknown VRs, odd lengths)."""
    if not isinstance(elem, RawDataElement) or not elem.is_little_endian:
        return None
    vr = elem.VR
    if elem.is_implicit_VR or not vr:
        entry = DicomDictionary.get(elem.tag)
        vr = entry[0] if entry else None
    value = elem.value or b""
    if vr is None or len(vr) != 2 or vr in ("SQ", "UN") or len(value) % 2:
        return None
    tag = int(elem.tag)
    if vr in LONG_LENGTH_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    if len(value) > 0xFFFF:
        return None
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _encode_element(elem: DataElement, encoding) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_data_element(fp, elem, encoding or None)
    return fp.getvalue()


def _creator_of(tag: int) -> int | None:
    """The private creator tag of a private data element, else None."""
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1 and elem > 0xFF:
        return (group << 16) | (elem >> 8)
    return None


def _value_length(head: bytes, size: int) -> int:
    """Value length of an explicit VR element of `size` bytes whose header starts `head`."""
    vr = head[4:6].decode("ascii", "replace")
    return size - (12 if vr in LONG_LENGTH_VRS else 8)


def encode_originals(
    ds: Dataset, originals: Dataset, max_value_bytes: int
) -> tuple[bytes, tuple[str, ...]]:
    """The plaintext of the backup (Explicit VR Little Endian) and the tags left out of it.

    Elements whose value is longer than `max_value_bytes`, or that cannot be encoded, are left
    out. `ds` is the object being de-identified: it gives the character set and the context for
    ambiguous VRs, and the stage-managed attributes it still has unchanged.
    """
    # Text is encoded (and raw elements decoded) in the original character set.
    charset_source = originals if SPECIFIC_CHARACTER_SET in originals else ds
    encoding = _charset(charset_source)
    encodings = convert_encodings(encoding) if encoding else None
    backed = set(originals.keys())
    tags = backed | {t for t in STAGE_MANAGED if t in ds}
    # A private element reads back best beside its creator: back up the creator as it is when
    # de-identification left it unchanged (orphan private elements are backed up as they are).
    tags |= {c for c in map(_creator_of, backed) if c is not None and c in ds}
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    kept: list[tuple[int, int, int]] = []
    skipped: list[str] = []
    for tag in sorted(tags):
        start = fp.tell()
        source = originals if tag in backed else ds
        raw = _encode_raw(source.get_item(tag))
        if raw is not None:
            fp.write(raw)
            kept.append((tag, start, fp.tell()))
            continue
        try:
            elem = _element(source, tag, ds, encodings)
            write_data_element(fp, elem, encodings)
        except Exception:  # an element pydicom cannot encode is reported, not fatal
            fp.seek(start)
            fp.parent.truncate()
            skipped.append(tag_str(tag))
            continue
        kept.append((tag, start, fp.tell()))
    buffer = fp.getvalue()
    large = {t for t, s, e in kept if _value_length(buffer[s:s + 12], e - s) > max_value_bytes}
    if large:
        skipped += [tag_str(t) for t in large]
        item_body = b"".join(buffer[s:e] for t, s, e in kept if t not in large)
    else:
        item_body = buffer
    item = struct.pack("<HHI", 0xFFFE, 0xE000, len(item_body)) + item_body
    sequence = struct.pack("<HH2sHI", 0x0400, 0x0550, b"SQ", 0, len(item)) + item
    # Specific Character Set comes first even when empty (the default repertoire): a reader
    # that guesses the encoding from the first tag (pydicom does) then sees group 0008, not 0400.
    cs = Dataset()
    if encoding is not None:
        cs.add(charset_source[SPECIFIC_CHARACTER_SET])
    else:
        cs.add_new(SPECIFIC_CHARACTER_SET, "CS", None)
    head = _encode_element(cs[SPECIFIC_CHARACTER_SET], None)
    body = head + sequence + _DIGEST_SUFFIX_HEAD
    return body + hashlib.sha256(head + sequence).digest(), tuple(sorted(set(skipped)))


def encrypt(plaintext: bytes, certificates: Sequence[x509.Certificate]) -> bytes:
    """CMS EnvelopedData (DER, AES-256-CBC, RSA key transport) for every certificate."""
    if not certificates:
        raise BackupError("no recipient certificates for the encrypted backup")
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(plaintext)
    for cert in certificates:
        builder = builder.add_recipient(cert)
    builder = builder.set_content_encryption_algorithm(algorithms.AES256)
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def attach_backup(
    ds: Dataset,
    originals: Dataset,
    certificates: Sequence[x509.Certificate],
    max_value_bytes: int,
) -> tuple[str, ...]:
    """Add an item holding the encrypted originals to (0400,0500) of `ds`; return the tags
    ("(gggg,eeee)") not backed up because too large or not encodable."""
    plaintext, skipped = encode_originals(ds, originals, max_value_bytes)
    item = Dataset()
    item.add_new(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID, "UI", ExplicitVRLittleEndian)
    item.add_new(ENCRYPTED_CONTENT, "OB", encrypt(plaintext, certificates))
    if ENCRYPTED_ATTRIBUTES_SEQUENCE in ds:
        items = list(ds[ENCRYPTED_ATTRIBUTES_SEQUENCE].value)
    else:
        items = []
    ds.add_new(ENCRYPTED_ATTRIBUTES_SEQUENCE, "SQ", DicomSequence([*items, item]))
    return skipped


# ---------------------------------------------------------------------------- reading


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ValueError("indefinite length")
    else:
        count = first & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _der(data, start)
        out.append((tag, s, e))
        start = e
    return out


_OID_ENVELOPED = bytes.fromhex("2a864886f70d010703")
_OID_RSA = bytes.fromhex("2a864886f70d010101")
_AES_CBC = {
    bytes.fromhex("608648016503040102"): 16,
    bytes.fromhex("608648016503040116"): 24,
    bytes.fromhex("60864801650304012a"): 32,
}


def _decrypt_with_key_only(blob: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """Decrypt EnvelopedData (RSA PKCS#1 v1.5 key transport, AES-CBC) without a certificate:
    try the key on every key-transport recipient."""
    _, s, e = _der(blob, 0)
    info = _children(blob, s, e)
    if len(info) < 2 or blob[info[0][1]:info[0][2]] != _OID_ENVELOPED:
        raise ValueError("not CMS EnvelopedData")
    (_, s, e), = _children(blob, info[1][1], info[1][2])
    parts = [p for p in _children(blob, s, e) if p[0] not in (0x02, 0xA0, 0xA1)]
    (_, rs, re_), (_, cs, ce) = parts[0], parts[1]
    content = _children(blob, cs, ce)
    alg = _children(blob, content[1][1], content[1][2])
    size = _AES_CBC.get(blob[alg[0][1]:alg[0][2]])
    if size is None or len(content) < 3 or content[2][0] != 0x80:
        raise ValueError("unsupported content encryption")
    iv = blob[alg[1][1]:alg[1][2]]
    ciphertext = blob[content[2][1]:content[2][2]]
    for tag, s, e in _children(blob, rs, re_):
        if tag != 0x30:  # only KeyTransRecipientInfo
            continue
        fields = _children(blob, s, e)
        kalg = _children(blob, fields[2][1], fields[2][2])
        if blob[kalg[0][1]:kalg[0][2]] != _OID_RSA:
            continue
        try:
            cek = key.decrypt(blob[fields[3][1]:fields[3][2]], asym_padding.PKCS1v15())
        except ValueError:
            continue
        if len(cek) != size:
            continue
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            continue
    raise ValueError("no recipient matches this key")


def _decrypt(blob: bytes, private_key, certificate: x509.Certificate | None) -> bytes:
    # The CMS object is the DER element at the start: an OB value of odd length carries a pad
    # byte after it (PS3.5 7.1), which OpenSSL's parser refuses as extra data.
    blob = blob[:_der(blob, 0)[2]]
    if certificate is None:
        return _decrypt_with_key_only(blob, private_key)
    return pkcs7.pkcs7_decrypt_der(blob, certificate, private_key, [])


def _check_key(private_key, certificate: x509.Certificate | None) -> None:
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise BackupError("the private key is not an RSA key (CMS key transport needs RSA)")
    if certificate is not None:
        if certificate.public_key() != private_key.public_key():
            raise BackupError("the private key does not belong to the given certificate")


def _parse_plaintext(plaintext: bytes) -> Dataset:
    body, suffix = plaintext[:-_DIGEST_SUFFIX_LEN], plaintext[-_DIGEST_SUFFIX_LEN:]
    if (
        len(plaintext) < _DIGEST_SUFFIX_LEN
        or not suffix.startswith(_DIGEST_SUFFIX_HEAD)
        or hashlib.sha256(body).digest() != suffix[len(_DIGEST_SUFFIX_HEAD):]
    ):
        raise ValueError("integrity digest mismatch")
    return read_dataset(BytesIO(plaintext), is_implicit_VR=False, is_little_endian=True)


def _open(ds: Dataset, private_key, certificate) -> tuple[int, Dataset]:
    """(index in (0400,0500), the Modified Attributes Sequence item) of the last item this key
    opens."""
    _check_key(private_key, certificate)
    if ENCRYPTED_ATTRIBUTES_SEQUENCE not in ds:
        raise BackupError("no Encrypted Attributes Sequence (0400,0500): nothing to recover")
    items = list(ds[ENCRYPTED_ATTRIBUTES_SEQUENCE].value)
    if not items:
        raise BackupError("Encrypted Attributes Sequence (0400,0500) is empty")
    problems: list[str] = []
    for index in reversed(range(len(items))):
        item = items[index]
        where = f"(0400,0500) item {index + 1}"
        syntax = item.get(ENCRYPTED_CONTENT_TRANSFER_SYNTAX_UID)
        content = item.get(ENCRYPTED_CONTENT)
        if content is None or not content.value:
            problems.append(f"{where}: no Encrypted Content (0400,0520)")
            continue
        if syntax is None or str(syntax.value).strip("\0 ") != ExplicitVRLittleEndian:
            problems.append(f"{where}: Encrypted Content Transfer Syntax UID (0400,0510) "
                            "is missing or not Explicit VR Little Endian")
            continue
        try:
            plaintext = _decrypt(bytes(content.value), private_key, certificate)
        except (ValueError, IndexError, UnsupportedAlgorithm):  # malformed or altered CMS
            problems.append(f"{where}: cannot be decrypted with this key "
                            "(not a recipient, or the content was altered)")
            continue
        try:
            decrypted = _parse_plaintext(plaintext)
            modified = decrypted[MODIFIED_ATTRIBUTES_SEQUENCE].value
        except Exception:
            problems.append(f"{where}: decrypted content fails its integrity check "
                            "(altered, or not a Modified Attributes Sequence (0400,0550))")
            continue
        if len(modified) != 1:
            problems.append(f"{where}: Modified Attributes Sequence (0400,0550) has "
                            f"{len(modified)} items, expected 1")
            continue
        return index, modified[0]
    raise BackupError("encrypted backup not readable: " + "; ".join(problems))


def read_backup(ds: Dataset, private_key, certificate: x509.Certificate | None = None) -> Dataset:
    """The decrypted Modified Attributes Sequence item (the original values) of `ds`."""
    return _open(ds, private_key, certificate)[1]


def _shallow_copy(ds: Dataset) -> Dataset:
    out = Dataset({tag: ds.get_item(tag) for tag in ds.keys()})
    if hasattr(ds, "file_meta"):
        meta = FileMetaDataset()
        for elem in ds.file_meta:
            meta.add(DataElement(elem.tag, elem.VR, elem.value))
        out.file_meta = meta
    if getattr(ds, "preamble", None) is not None:
        out.preamble = ds.preamble
    is_implicit, is_little = ds.original_encoding
    if is_implicit is not None:
        out.set_original_encoding(is_implicit, is_little, ds.original_character_set)
    return out


def _clear_rearranged_private_groups(out: Dataset, originals: Dataset) -> None:
    """Drop a private group from `out` when its creator blocks no longer sit where the backup
    says they were: de-identification renumbered or removed blocks, and the backup holds the
    whole original group (the remediator records every element of a group it changes)."""
    groups: dict[int, list[int]] = {}
    for tag in originals.keys():
        if (tag >> 16) & 1 and 0x10 <= (tag & 0xFFFF) <= 0xFF:
            groups.setdefault(tag >> 16, []).append(tag)
    for group, creators in groups.items():
        if all(t in out and str(out[t].value).strip() == str(originals[t].value).strip()
               for t in creators):
            continue
        for tag in [t for t in out.keys() if t >> 16 == group]:
            del out[tag]


def restore(ds: Dataset, originals: Dataset, used_item: int | None = None) -> Dataset:
    """A new dataset: `ds` with the `used_item` of (0400,0500) and the attributes
    de-identification adds removed, then every element of `originals` put back."""
    out = _shallow_copy(ds)
    if used_item is not None and ENCRYPTED_ATTRIBUTES_SEQUENCE in out:
        items = list(out[ENCRYPTED_ATTRIBUTES_SEQUENCE].value)
        del items[used_item]
        if items:
            out.add_new(ENCRYPTED_ATTRIBUTES_SEQUENCE, "SQ", DicomSequence(items))
        else:
            del out[ENCRYPTED_ATTRIBUTES_SEQUENCE]
    for tag in ADDED_BY_DEIDENTIFICATION:
        if tag in out:
            del out[tag]
    _clear_rearranged_private_groups(out, originals)
    for tag in originals.keys():
        out[tag] = originals[tag]
    if hasattr(out, "file_meta") and "SOPInstanceUID" in out:
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return out


def recover(ds: Dataset, private_key, certificate: x509.Certificate | None = None) -> Dataset:
    """A new dataset with every backed-up original value restored (see `restore`)."""
    index, originals = _open(ds, private_key, certificate)
    return restore(ds, originals, index)

