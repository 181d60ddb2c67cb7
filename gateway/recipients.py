"""Honest-broker keys: create a key pair + self-signed certificate; load certificates and keys.

The gateway holds only recipients' certificates (public keys); the private key stays with the
honest broker and is needed only by `gantry recover`. Errors name the file and the problem.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_KEY_BITS = 3072
DEFAULT_DAYS = 3650
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RecipientError(ValueError):
    """A certificate or key file is missing, unreadable or unsuitable."""


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def recipient_paths(name: str, directory: str | os.PathLike) -> tuple[Path, Path]:
    """(private key path, certificate path) for recipient `name` in `directory`."""
    base = Path(directory)
    return base / f"{name}.key.pem", base / f"{name}.cert.pem"


def create_recipient(
    name: str,
    directory: str | os.PathLike = ".",
    *,
    key_bits: int = DEFAULT_KEY_BITS,
    days: int = DEFAULT_DAYS,
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """Write NAME.key.pem (RSA private key, PKCS#8) and NAME.cert.pem (self-signed X.509 for key
    encipherment), both owner-only; never overwrite. Returns (key path, certificate path)."""
    if not _NAME_RE.match(name):
        raise RecipientError(f"recipient name {name!r} must be 1-64 letters, digits, '.', '_' "
                             "or '-', starting with a letter or digit")
    if days < 1:
        raise RecipientError(f"certificate validity must be at least 1 day, not {days}")
    key_path, cert_path = recipient_paths(name, directory)
    for path in (key_path, cert_path):
        if path.exists():
            raise RecipientError(f"{path}: already exists; not overwriting")
    Path(directory).mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Gantry honest broker"),
    ])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=True, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption()
    )
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8, encryption))
    try:
        _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except OSError:
        key_path.unlink(missing_ok=True)
        raise
    return key_path, cert_path


def _read(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise RecipientError(f"{path}: cannot read {what}: {exc.strerror}") from None


def load_certificate(path: str | os.PathLike) -> x509.Certificate:
    """One X.509 certificate (PEM or DER) with an RSA public key (CMS key transport)."""
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError:
        raise RecipientError(f"{path}: not an X.509 certificate (PEM or DER)") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise RecipientError(f"{path}: the certificate's key is not RSA; the encrypted backup "
                             "needs an RSA recipient")
    return cert


def load_recipient_certificates(
    paths: Sequence[str | os.PathLike], base: str | os.PathLike | None = None
) -> list[x509.Certificate]:
    """The recipients' certificates for the encrypted backup, in order; at least one.
    Relative paths are taken from `base` (the configuration file's folder) when given."""
    if not paths:
        raise RecipientError("no recipient certificates named for the encrypted backup")
    return [load_certificate(Path(base) / p if base is not None else p) for p in paths]


def load_private_key(
    path: str | os.PathLike, passphrase: bytes | None = None
) -> rsa.RSAPrivateKey:
    """An RSA private key (PEM or DER, PKCS#8 or PKCS#1, optionally passphrase-protected)."""
    data = _read(path, "private key")
    loader = (serialization.load_pem_private_key if b"-----BEGIN" in data
              else serialization.load_der_private_key)
    try:
        key = loader(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise RecipientError(f"{path}: the private key is encrypted; give its passphrase") \
                from None
        raise RecipientError(f"{path}: the private key is not encrypted; give no passphrase") \
            from None
    except ValueError:
        raise RecipientError(f"{path}: not a private key, or wrong passphrase") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise RecipientError(f"{path}: not an RSA private key")
    return key



load_certificates = load_recipient_certificates  # the name the pipeline uses
