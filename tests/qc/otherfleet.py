"""Generated non-CT series from a fleet of machines (MR, DX, US: no Hounsfield scale), with
planted patient identifiers (to grep for) and one fault per model: an MR scanner whose intensity
drifted, a DX detector with three times the noise, an ultrasound unit with another pixel spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

SIZE = 64
PLANTED = {"PatientName": "OTHERPLANT^QUENTIN", "PatientID": "OTHERPID-2718281",
           "PatientBirthDate": "19310911", "AccessionNumber": "OTHACC314"}

# (modality, manufacturer, model, serial, gain, noise, pixel spacing)
FLEET = [
    ("MR", "Magnetix", "Field 3T", "M1", 1.0, 20.0, 0.9),
    ("MR", "Magnetix", "Field 3T", "M2", 1.02, 21.0, 0.9),
    ("MR", "Magnetix", "Field 3T", "M3", 1.5, 20.0, 0.9),   # intensity drift: +50 %
    ("MR", "Magnetix", "Field 3T", "M4", 0.98, 19.0, 0.9),
    ("DX", "Radiant", "Flat 43", "D1", 1.0, 15.0, 0.15),
    ("DX", "Radiant", "Flat 43", "D2", 1.0, 45.0, 0.15),    # three times the noise
    ("DX", "Radiant", "Flat 43", "D3", 1.01, 15.5, 0.15),
    ("DX", "Radiant", "Flat 43", "D4", 0.99, 14.5, 0.15),
    ("US", "Sonora", "Wave 5", "U1", 1.0, 12.0, 0.2),
    ("US", "Sonora", "Wave 5", "U2", 1.0, 12.0, 0.4),       # another pixel spacing
    ("US", "Sonora", "Wave 5", "U3", 1.0, 12.5, 0.2),
]
FAULTS = {"Magnetix Field 3T #M3": "p50", "Radiant Flat 43 #D2": "noise",
          "Sonora Wave 5 #U2": "pixel_spacing"}
SOP = {"MR": MRImageStorage, "DX": DigitalXRayImageStorageForPresentation,
       "US": UltrasoundImageStorage}


def image(rng: np.random.Generator, modality: str, gain: float, noise: float) -> np.ndarray:
    """A disc of signal on a dark background (an ellipse of attenuation for DX)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
    level = {"MR": 1000.0, "DX": 2000.0, "US": 120.0}[modality] * gain
    base = {"MR": 0.0, "DX": 300.0, "US": 10.0}[modality]
    out = np.full((SIZE, SIZE), base)
    out[r < SIZE * 0.35] = level
    out = out + rng.normal(0, noise, out.shape)
    return np.abs(out) if modality == "MR" else out


def _dataset(modality: str, maker: str, model: str, serial: str, study: str, series: str,
             number: int, k: int, spacing: float) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP[modality]
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SOP[modality], sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    for key, value in PLANTED.items():
        setattr(ds, key, value)
    ds.PatientSex, ds.StudyDate, ds.Modality = "O", "20240102", modality
    ds.Manufacturer, ds.ManufacturerModelName = maker, model
    ds.DeviceSerialNumber = serial
    ds.SeriesNumber, ds.InstanceNumber = number, k + 1
    ds.SeriesDescription = f"{modality.lower()} phantom"
    ds.PixelSpacing = [spacing, spacing]
    ds.Rows = ds.Columns = SIZE
    return ds


def write_fleet(root: Path, series_per_machine: int = 2, slices: int = 2) -> list[Path]:
    """Write the fleet's series under `root`, one folder per machine; return the files."""
    files = []
    for m, (modality, maker, model, serial, gain, noise, spacing) in enumerate(FLEET):
        rng = np.random.default_rng(2000 + m)
        study = generate_uid()
        for s in range(series_per_machine):
            series = generate_uid()
            for k in range(slices if modality == "MR" else 1):
                ds = _dataset(modality, maker, model, serial, study, series, s + 1, k, spacing)
                values = image(rng, modality, gain, noise)
                if modality == "US":
                    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
                    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
                    ds.PlanarConfiguration = 0
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
                    ds.PixelData = np.repeat(grey[..., None], 3, axis=2).tobytes()
                else:
                    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
                    ds.PixelData = np.clip(np.rint(values), 0, 4095).astype(np.uint16).tobytes()
                ds.PixelRepresentation = 0
                out = root / f"{modality}{m}-{serial}" / f"s{s}_{k}.dcm"
                out.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(out, enforce_file_format=True)
                files.append(out)
    return files
