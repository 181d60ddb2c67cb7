"""`gantry keys init PATH` (the site HMAC key) and `gantry keys new-recipient NAME` (an honest
broker's RSA key pair and self-signed certificate for the encrypted backup)."""

from __future__ import annotations

import argparse
import os
import sys

from gateway.recipients import DEFAULT_DAYS, DEFAULT_KEY_BITS, RecipientError, create_recipient
from gateway.sitekey import create_key_file


def _init(args: argparse.Namespace) -> int:
    try:
        path = create_key_file(args.path)
    except FileExistsError:
        print(f"gantry keys init: {args.path}: already exists; not overwriting", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gantry keys init: {args.path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"site key written to {path} (owner-only). Name it in the configuration as "
          "site_key: {file: ...}; keep a copy: without it, new UIDs and pseudonyms change.")
    return 0


def _passphrase(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise RecipientError(f"environment variable {env} (the key passphrase) is not set")
    return value.encode()


def _new_recipient(args: argparse.Namespace) -> int:
    try:
        key_path, cert_path = create_recipient(
            args.name, args.dir, key_bits=args.bits, days=args.days,
            passphrase=_passphrase(args.passphrase_env))
    except RecipientError as exc:
        print(f"gantry keys new-recipient: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gantry keys new-recipient: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"private key: {key_path} (owner-only; keep it with the honest broker, not on the "
          "gateway)")
    print(f"certificate: {cert_path} (give it to the gateway: backup.recipients)")
    return 0


def register(subparsers: argparse._SubParsersAction, command: str | None = None) -> None:
    keys = subparsers.add_parser("keys", help="create the site key or an honest-broker recipient")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    init = actions.add_parser("init", help="write a new random site key (HMAC secret) to PATH")
    init.add_argument("path", metavar="PATH")
    init.set_defaults(func=_init)

    new = actions.add_parser(
        "new-recipient",
        help="an RSA private key + self-signed certificate for the encrypted backup")
    new.add_argument("name", metavar="NAME", help="recipient name (files NAME.key.pem, "
                     "NAME.cert.pem)")
    new.add_argument("--dir", default=".", help="where to write the files (default: .)")
    new.add_argument("--bits", type=int, default=DEFAULT_KEY_BITS, choices=(2048, 3072, 4096),
                     help=f"RSA key size (default: {DEFAULT_KEY_BITS})")
    new.add_argument("--days", type=int, default=DEFAULT_DAYS,
                     help=f"certificate validity in days (default: {DEFAULT_DAYS})")
    new.add_argument("--passphrase-env", metavar="VAR",
                     help="encrypt the private key with the passphrase in this environment "
                     "variable")
    new.set_defaults(func=_new_recipient)
