"""The site secret: the HMAC key behind every new UID, pseudonym and date shift."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.config import Config, ConfigError

KEY_BYTES = 32


class SiteKeyError(RuntimeError):
    """The site key is missing, unreadable or too short."""


def create_key_file(path: str | os.PathLike) -> Path:
    """Write a new random key (hex) to `path`, readable only by its owner; never overwrite."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEY_BYTES) + "\n")
    os.chmod(target, 0o600)
    return target


def _decode(text: str, where: str) -> bytes:
    """The key from its hex text (never echoed: a message names only where it came from)."""
    text = text.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SiteKeyError(f"{where}: the site key must be hexadecimal digits (0-9, a-f), as "
                           "`gantry keys init PATH` writes it") from None
    if len(key) < 16:
        raise SiteKeyError(f"{where}: the site key must be at least 16 bytes "
                           f"(32 hex digits); it has {len(key)}")
    return key


def _check_private(path: Path) -> None:
    """Refuse a key file that anyone but its owner may read or change."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SiteKeyError(f"{path}: the site key file is open to others (mode {mode:04o}); "
                           f"it must be owner-only: chmod 600 {path}")


def load_site_key(config: Config) -> bytes:
    """Read the key named by `config.site_key` (a file, or an environment variable)."""
    secret = config.site_key
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise ConfigError(config.source, "site_key.env",
                              f"environment variable {secret.env} is not set")
        return _decode(value, f"environment variable {secret.env}")
    path = config.base_dir / Path(secret.file)  # type: ignore[arg-type]
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        problem = f"cannot read {path}: {exc.strerror}"
        raise ConfigError(config.source, "site_key.file", problem) from None
    except UnicodeDecodeError:
        problem = (f"{path} is not a site key file: it must hold the key as hex text "
                   "(make one with `gantry keys init PATH`)")
        raise ConfigError(config.source, "site_key.file", problem) from None
    _check_private(path)
    return _decode(text, str(path))
