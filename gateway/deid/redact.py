"""Pixel redaction: decide per machine signature, blank rectangles, re-encode losslessly.

`Redactor.decide(header)` finds the rule that covers an object (see `signatures` for the order)
and whether the object is at risk of burned-in text (BurnedInAnnotation YES, or a modality /
SOP class in the configured at-risk lists). A refused decision (at risk, no rule) is for the
caller to quarantine: "burned-in text risk, no redaction rule for <signature>".

`Redactor.redact(ds, decision)` decodes every frame with pydicom and its plugins (native, big
endian, deflated, RLE, JPEG baseline / extended / lossless, JPEG-LS, JPEG 2000), blanks the
rectangles (negative x / y count from the right / bottom edge; clipped to the image), and
writes the pixels losslessly as `output_encoding` says. Pixels outside the rectangles keep the
decoded values bit for bit. The stored colour space is kept where it can be: YBR_FULL stays
YBR_FULL; YBR_FULL_422 (which cannot be re-subsampled losslessly) becomes RGB as pydicom decodes
it for display, since US and VL objects accept RGB but not YBR_FULL; JPEG 2000 YBR_RCT / YBR_ICT
come out as RGB (the codec's inverse transform); RGB written as JPEG 2000 lossless is YBR_RCT
(the reversible transform the US IOD requires). When the chosen codec cannot hold the image
(e.g. RLE with 32-bit samples, 1-bit data) the pixels are written native instead. Explicit VR
Big Endian objects stay big endian native (the rest of the dataset cannot be re-encoded safely);
native little-endian and deflated objects keep their transfer syntax when written native.
BurnedInAnnotation becomes NO only when a rule was applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import compress, get_decoder
from pydicom.pixels.utils import pack_bits
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from gateway.config import ConfigError, RedactionConfig
from gateway.deid.ctp_script import CtpScriptError, builtin_script_path, load_script
from gateway.deid.ocr import Finding, Spans, TextPolicy, padded, read_words
from gateway.deid.signatures import (
    Region,
    Rule,
    first_match,
    machine_signature,
    rule_from_config,
    rule_from_signature,
)
from gateway.deid.values import read_text

BUILTIN_CTP = "builtin"  # `ctp_scripts: [builtin]` loads the CTP library shipped with Gantry
CLEAN_PIXEL_DATA_CODE = "113101"  # CID 7050 "Clean Pixel Data Option"
BURNED_IN_ANNOTATION, MODALITY, SOP_CLASS_UID = 0x00280301, 0x00080060, 0x00080016
MEDIA_STORAGE_SOP_CLASS_UID = 0x00020002

_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
           DeflatedExplicitVRLittleEndian)
_ENCODINGS = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_1",
    "1.2.840.10008.1.2.4.201": "ISO_15444_15",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}


class RedactionError(ValueError):
    """Pixel data that cannot be redacted (names the element and the problem, no values)."""


@dataclass(frozen=True)
class Decision:
    """What to do with one object's pixels."""

    signature: str  # device text only, e.g. "GE MEDICAL SYSTEMS / LOGIQ E9"
    rule: str | None  # name of the rule that matched, None if none
    regions: tuple[Region, ...]
    at_risk: bool  # BurnedInAnnotation YES, or modality / SOP class in the at-risk lists

    @property
    def refused(self) -> bool:
        """At risk of burned-in text and no rule covers it."""
        return self.at_risk and self.rule is None

    @property
    def quarantine_reason(self) -> str:
        return f"burned-in text risk, no redaction rule for {self.signature}"


class Redactor:
    """Compiled redaction rules (YAML rules first, then CTP scripts) and the at-risk policy."""

    def __init__(self, cfg: RedactionConfig, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        rules: list[Rule] = [rule_from_config(r.name, r.match, r.regions) for r in cfg.rules]
        for i, script in enumerate(cfg.ctp_scripts):
            path = script_path(script, base_dir)
            try:
                signatures = load_script(path)
            except CtpScriptError as exc:
                where = f"redaction.ctp_scripts[{i}]"
                raise ConfigError(str(path), where, f"line {exc.line}: {exc.problem}") from None
            rules.extend(rule_from_signature(sig) for sig in signatures)
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._modalities = {m.upper() for m in cfg.at_risk_modalities}
        self._sop_classes = set(cfg.at_risk_sop_classes)
        self.text_policy = TextPolicy(cfg.ocr_patterns, redact_all=cfg.ocr_redact == "all")
        self.verify_policy = TextPolicy(cfg.ocr_patterns)

    def match(self, header: Dataset) -> Rule | None:
        return first_match(self.rules, header)

    def at_risk(self, header: Dataset) -> bool:
        """BurnedInAnnotation YES, or a modality or SOP class in the at-risk lists (elements
        read undecoded where that is the same, `values.read_text`)."""
        burned = read_text(header, BURNED_IN_ANNOTATION).strip().upper() == "YES"
        modality = read_text(header, MODALITY).strip().upper()
        sop_class = read_text(header, SOP_CLASS_UID)
        if not sop_class:
            meta = getattr(header, "file_meta", None)
            sop_class = read_text(meta, MEDIA_STORAGE_SOP_CLASS_UID) if meta else ""
        return burned or modality in self._modalities or sop_class in self._sop_classes

    def decide(self, header: Dataset) -> Decision:
        """The decision for one object, from its header (pixel data not needed)."""
        rule = self.match(header)
        return Decision(
            signature=machine_signature(header),
            rule=rule.name if rule else None,
            regions=rule.regions if rule else (),
            at_risk=self.at_risk(header),
        )

    def redact(self, ds: Dataset, decision: Decision) -> None:
        """Blank the decision's rectangles in every frame of `ds`, in place."""
        if decision.rule is None:
            return
        if decision.regions:
            redact_pixels(ds, decision.regions, self.cfg.output_encoding)
        ds.BurnedInAnnotation = "NO"

    def redact_text(self, ds: Dataset, identifiers: Sequence[Spans] = ()) -> tuple[Finding, ...]:
        """Read the text of every frame by OCR and blank the words the policy redacts, in
        place; the findings (boxes and kinds, no text). Pixels stay untouched when there are
        none. RedactionError when the pixels cannot be decoded."""
        pixels = decode_pixels(ds)
        words = read_words(pixels.array, pixels.photometric, palette(ds, pixels))
        findings = tuple(self.text_policy.classify(words, identifiers))
        for finding in findings:
            box = padded(finding.box, pixels.rows, pixels.columns)
            blank(pixels, clip_regions([box], pixels.rows, pixels.columns), frame=finding.frame)
        if findings:
            store_pixels(ds, pixels, self.cfg.output_encoding)
        ds.BurnedInAnnotation = "NO"
        return findings

    def readable_text(self, ds: Dataset, identifiers: Sequence[Spans] = ()) -> list[str]:
        """The pixel half of verify: problems (frame and kind, no text) for identifying text
        OCR still reads in the stored pixels of `ds`."""
        pixels = decode_pixels(ds)
        words = read_words(pixels.array, pixels.photometric, palette(ds, pixels))
        found = self.verify_policy.classify(words, identifiers)
        frames = sorted({(f.frame, f.kind) for f in found})
        return [f"{kind} is still readable in the pixels of frame {frame + 1}"
                for frame, kind in frames]


def palette(ds: Dataset, pixels: Pixels):  # -> Callable[[np.ndarray], np.ndarray] | None
    """A function mapping palette indices to RGB for a PALETTE COLOR object, else None."""
    if pixels.photometric != "PALETTE COLOR":
        return None
    from pydicom.pixels import apply_color_lut

    return lambda indices: apply_color_lut(indices, ds)


def script_path(script: str, base_dir: Path | None = None) -> Path:
    """A `ctp_scripts` entry → its file: 'builtin', absolute, or relative to `base_dir`."""
    if script == BUILTIN_CTP:
        return builtin_script_path()
    path = Path(script).expanduser()
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


# ---------------------------------------------------------------------------- pixels


def clip_regions(
    regions: Iterable[Region], rows: int, columns: int
) -> list[tuple[int, int, int, int]]:
    """Rectangles → (row0, row1, col0, col1) slices inside the image; empty ones dropped.

    A negative x (y) counts from the right (bottom) edge: x = -100 starts 100 columns from
    the right.
    """
    out = []
    for x, y, w, h in regions:
        x0 = columns + x if x < 0 else x
        y0 = rows + y if y < 0 else y
        c0, c1 = max(0, x0), min(columns, x0 + w)
        r0, r1 = max(0, y0), min(rows, y0 + h)
        if c0 < c1 and r0 < r1:
            out.append((r0, r1, c0, c1))
    return out


def fill_value(pi: str, bits_stored: int, signed: bool, samples: int) -> tuple[int, ...]:
    """The constant written into blanked pixels: black in the stored colour space."""
    lo = -(1 << (bits_stored - 1)) if signed else 0
    hi = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    if pi == "MONOCHROME1":
        return (hi,)
    if pi.startswith("YBR") and samples == 3:
        mid = 0 if signed else 1 << (bits_stored - 1)
        return (lo, mid, mid)
    return (lo,) * samples


@dataclass
class Pixels:
    """The decoded frames of one object, ready to blank and to store again."""

    array: np.ndarray  # (frames, rows, columns, samples), writeable
    ts: UID
    photometric: str  # as the array holds it (YBR_FULL_422 decodes to full-resolution YBR_FULL)
    bits_allocated: int
    fill: tuple[int, ...]

    @property
    def rows(self) -> int:
        return int(self.array.shape[1])

    @property
    def columns(self) -> int:
        return int(self.array.shape[2])


def decode_pixels(ds: Dataset) -> Pixels:
    """Every frame of `ds` decoded as stored (RedactionError, naming the element, if it cannot
    be)."""
    meta = getattr(ds, "file_meta", None)
    ts = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    if "PixelData" not in ds:
        raise RedactionError("(7FE0,0010) Pixel Data: absent, nothing to redact")
    if not ts:
        raise RedactionError("(0002,0010) Transfer Syntax UID: absent, cannot decode pixels")
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise RedactionError(f"(0002,0010) no pixel decoder for transfer syntax {ts}") from None
    if not decoder.is_available:
        raise RedactionError(f"(0002,0010) the decoder for {ts.name} is not installed")
    # YBR_FULL_422 comes out of the decoders at full resolution; no colour IOD that allowed it
    # is sure to allow YBR_FULL (US does not), so it is converted to RGB as pydicom displays it.
    # Every other colour space is kept as stored (JPEG 2000's YBR_RCT / YBR_ICT are undone by
    # the codec itself).
    as_stored = str(ds.get("PhotometricInterpretation", "")).strip() != "YBR_FULL_422"
    try:
        arr, props = decoder.as_array(ds, raw=as_stored)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means we cannot redact
        raise RedactionError(
            f"(7FE0,0010) Pixel Data: cannot decode {ts.name}: {type(exc).__name__}"
        ) from None
    rows, columns = int(props["rows"]), int(props["columns"])
    samples = int(props["samples_per_pixel"])
    frames = int(props["number_of_frames"])
    pi = str(props["photometric_interpretation"])
    if pi == "YBR_FULL_422":  # full-resolution YCbCr from a decoder (declared otherwise)
        pi = "YBR_FULL"
    bits_stored = int(props.get("bits_stored", ds.get("BitsStored", props["bits_allocated"])))
    signed = int(props.get("pixel_representation", 0)) == 1
    arr = arr.reshape((frames, rows, columns, samples))
    if not arr.flags.writeable:
        arr = arr.copy()
    return Pixels(arr, ts, pi, int(props["bits_allocated"]),
                  fill_value(pi, bits_stored, signed, samples))


def blank(pixels: Pixels, boxes: Iterable[tuple[int, int, int, int]],
          frame: int | None = None) -> None:
    """Set (row0, row1, col0, col1) boxes to the fill value, in one frame or in every frame."""
    frames = slice(None) if frame is None else slice(frame, frame + 1)
    value = np.asarray(pixels.fill, dtype=pixels.array.dtype)
    for r0, r1, c0, c1 in boxes:
        pixels.array[frames, r0:r1, c0:c1, :] = value


def store_pixels(ds: Dataset, pixels: Pixels, output_encoding: str = "native") -> None:
    """Write blanked pixels back into `ds` losslessly, as `output_encoding` says."""
    _store(ds, pixels.array, pixels.ts, pixels.photometric, pixels.bits_allocated,
           output_encoding)
    if pixels.ts in _LOSSY_METHOD and "LossyImageCompression" not in ds:
        # the pixels went through a lossy codec before us: say so once they are stored lossless
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = _LOSSY_METHOD[pixels.ts]


def redact_pixels(ds: Dataset, regions: Iterable[Region], output_encoding: str = "native") -> bool:
    """Decode, blank `regions` in every frame, re-encode losslessly; False if nothing changed."""
    pixels = decode_pixels(ds)
    boxes = clip_regions(regions, pixels.rows, pixels.columns)
    if not boxes:
        return False
    blank(pixels, boxes)
    store_pixels(ds, pixels, output_encoding)
    return True


def _store(ds: Dataset, arr: np.ndarray, ts: UID, pi: str, bits_allocated: int,
           output_encoding: str) -> None:
    """Write `arr` (frames, rows, columns, samples) into `ds` as `output_encoding` says."""
    frames, rows, columns, samples = arr.shape
    shaped = arr.reshape((rows, columns, samples) if frames == 1 else arr.shape)
    if samples == 1:
        shaped = shaped[..., 0]
    ds.PhotometricInterpretation = pi
    if samples > 1:
        ds.PlanarConfiguration = 0
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]

    target = _ENCODINGS.get(output_encoding)
    if ts == ExplicitVRBigEndian:
        target = None  # pydicom cannot re-encode the rest of a big-endian dataset: stay native
    if target is not None and bits_allocated in (8, 16, 32, 40):
        little = shaped.astype(shaped.dtype.newbyteorder("<"), copy=False)
        if target == JPEG2000Lossless and pi == "RGB":
            # reversible colour transform: what US (and most colour IODs) want for J2K lossless
            ds.PhotometricInterpretation = "YBR_RCT"
        try:
            compress(ds, target, little, generate_instance_uid=False)
            return
        except Exception:  # noqa: BLE001 - the codec cannot hold this image: write native
            ds.PhotometricInterpretation = pi

    native_ts = ts if ts in _NATIVE else ExplicitVRLittleEndian
    if bits_allocated == 1:
        data = pack_bits(shaped)
    else:
        order = ">" if native_ts == ExplicitVRBigEndian else "<"
        data = shaped.astype(shaped.dtype.newbyteorder(order), copy=False).tobytes()
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if bits_allocated <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = native_ts
