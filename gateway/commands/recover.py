"""`gantry recover INPUT OUTPUT --key KEY.pem`: restore the original values an honest broker's
key opens from the Encrypted Attributes Sequence, for one file or a folder tree. All or nothing:
any error leaves no output. `--show` prints the original values of one object instead."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from gateway.deid.backup import BackupError, read_backup, recover
from gateway.dicomio import DicomReadError, read_full
from gateway.recipients import RecipientError, load_certificate, load_private_key


class RecoverError(Exception):
    """A problem that stops the recovery; the message names the file."""


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return True  # let the reader report it
    return len(head) == 132 and head[128:132] == b"DICM"


def _recover_one(src: Path, key, cert) -> Dataset:
    try:
        return recover(read_full(src), key, cert)
    except BackupError as exc:
        raise RecoverError(f"{src}: {exc}") from None


def _write(ds: Dataset, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as fh:
        pydicom.dcmwrite(fh, ds, enforce_file_format=True)


def _partial_name(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial-{os.getpid()}")


def recover_file(src: Path, output: Path, key, cert) -> Path:
    """Recover one file to `output` (or into it, when it is a folder); returns the path."""
    target = output / src.name if output.is_dir() else output
    if target.exists():
        raise RecoverError(f"{target}: already exists; not overwriting")
    ds = _recover_one(src, key, cert)
    tmp = _partial_name(target)
    try:
        _write(ds, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def recover_tree(src: Path, output: Path, key, cert) -> tuple[int, int]:
    """Recover every DICOM file under `src` into `output` (same layout), all or nothing.

    Returns (files recovered, non-DICOM files skipped)."""
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RecoverError(f"{output}: already exists and is not an empty folder")
    if output.resolve().is_relative_to(src.resolve()):
        raise RecoverError(f"{output}: the output folder must not be inside the input folder")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    dicom = [p for p in files if _is_dicom(p)]
    if not dicom:
        raise RecoverError(f"{src}: no DICOM files found")
    staging = _partial_name(output)
    try:
        for path in dicom:
            _write(_recover_one(path, key, cert), staging / path.relative_to(src))
        if output.exists():
            output.rmdir()
        os.rename(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return len(dicom), len(files) - len(dicom)


def show(src: Path, key, cert) -> str:
    """The backed-up original values of one object, one element a line."""
    try:
        originals = read_backup(read_full(src), key, cert)
    except BackupError as exc:
        raise RecoverError(f"{src}: {exc}") from None
    lines = [f"# original values backed up in {src} ({len(originals)} attributes)"]
    lines.extend(str(originals).splitlines())
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    src = Path(args.input)
    passphrase = None
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise RecoverError(f"environment variable {args.passphrase_env} "
                               "(the key passphrase) is not set")
        passphrase = value.encode()
    key = load_private_key(args.key, passphrase)
    cert = load_certificate(args.cert) if args.cert else None
    if not src.exists():
        raise RecoverError(f"{src}: no such file or folder")
    if args.show:
        if args.output is not None:
            raise RecoverError("--show prints the original values; give no OUTPUT")
        if not src.is_file():
            raise RecoverError(f"{src}: --show takes one file")
        print(show(src, key, cert))
        return 0
    if args.output is None:
        raise RecoverError("give OUTPUT (or --show)")
    output = Path(args.output)
    if src.is_dir():
        count, skipped = recover_tree(src, output, key, cert)
        note = f" ({skipped} non-DICOM files skipped)" if skipped else ""
        print(f"recovered {count} objects into {output}{note}")
    else:
        print(f"recovered {recover_file(src, output, key, cert)}")
    return 0


def _handler(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (RecoverError, RecipientError, DicomReadError) as exc:
        print(f"gantry recover: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"gantry recover: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction, command: str | None = None) -> None:
    parser = subparsers.add_parser(
        "recover", help="restore original values from the encrypted backup (honest broker)",
        description=__doc__)
    parser.add_argument("input", metavar="INPUT", help="a de-identified file or folder")
    parser.add_argument("output", metavar="OUTPUT", nargs="?",
                        help="where to write the recovered file or folder (must not exist)")
    parser.add_argument("--key", required=True, metavar="KEY.pem",
                        help="the recipient's private key")
    parser.add_argument("--cert", metavar="CERT.pem",
                        help="the recipient's certificate (optional: the key alone is enough)")
    parser.add_argument("--passphrase-env", metavar="VAR",
                        help="the key's passphrase is in this environment variable")
    parser.add_argument("--show", action="store_true",
                        help="print the original values of one object instead of writing")
    parser.set_defaults(func=_handler)
