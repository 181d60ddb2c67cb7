"""Generated CT series from a fleet of scanners: a water cylinder in air, 12-bit stored values
with Rescale Intercept -1024, planted patient identifiers (to grep for), per-scanner offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SIZE = 96
PLANTED = {"PatientName": "QCPLANT^ZEBEDEE", "PatientID": "QCPID-48151623",
           "PatientBirthDate": "19230405", "AccessionNumber": "QCACC777"}

# (manufacturer, model, serial, air/water shift in HU, noise in HU); the serials are planted
# too: an output-only report must name scanners without them
FLEET = [
    ("Acme", "Scan 64", "SN7741-A1", 0.0, 10.0),
    ("Acme", "Scan 64", "SN7741-A2", 2.0, 10.5),
    ("Acme", "Scan 64", "SN7741-A3", 150.0, 9.8),   # calibration drift: +150 HU on air and water
    ("Acme", "Scan 64", "SN7741-A4", -3.0, 10.2),
    ("Borealis", "Helix", "SN7741-B1", 1.0, 12.0),
    ("Borealis", "Helix", "SN7741-B2", -1.0, 36.0),  # three times the noise
    ("Borealis", "Helix", "SN7741-B3", 0.0, 12.5),
    ("Borealis", "Helix", "SN7741-B4", 2.0, 11.6),
]
DRIFT, NOISY = "Acme Scan 64 #SN7741-A3", "Borealis Helix #SN7741-B2"


def ct_slice(rng: np.random.Generator, shift: float, noise: float) -> np.ndarray:
    """A slice in HU: air (-1000) around a water disc (0) with a small bone insert (700)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r = np.hypot(yy - SIZE / 2, xx - SIZE / 2)
    hu = np.full((SIZE, SIZE), -1000.0)
    hu[r < SIZE * 0.38] = 0.0
    hu[np.hypot(yy - SIZE / 2, xx - SIZE * 0.65) < 5] = 700.0
    return hu + shift + rng.normal(0, noise, hu.shape)


def write_fleet(root: Path, series_per_machine: int = 2, slices: int = 3,
                fleet: list = FLEET) -> list[Path]:
    """Write the fleet's series under `root`, one folder per scanner; return the files."""
    files = []
    for m, (maker, model, serial, shift, noise) in enumerate(fleet):
        rng = np.random.default_rng(1000 + m)
        study = generate_uid()
        for s in range(series_per_machine):
            series = generate_uid()
            for k in range(slices):
                ds = Dataset()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
                sop = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = sop
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                for key, value in PLANTED.items():
                    setattr(ds, key, value)
                ds.PatientSex, ds.StudyDate, ds.Modality = "O", "20240102", "CT"
                ds.Manufacturer, ds.ManufacturerModelName = maker, model
                ds.DeviceSerialNumber = serial
                ds.SeriesNumber, ds.InstanceNumber = s + 1, k + 1
                ds.SeriesDescription = "qc phantom"
                ds.KVP, ds.Exposure, ds.SliceThickness = 120, 200, 2.5
                ds.ConvolutionKernel = "STANDARD"
                ds.PixelSpacing = [0.7, 0.7]
                ds.ImagePositionPatient = [0, 0, k * 2.5]
                ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
                ds.Rows = ds.Columns = SIZE
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
                ds.PixelRepresentation = 0
                ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
                ds.WindowCenter, ds.WindowWidth = 40, 400
                stored = np.clip(np.rint(ct_slice(rng, shift, noise) + 1024), 0, 4095)
                ds.PixelData = stored.astype(np.uint16).tobytes()
                out = root / f"m{m}-{serial}" / f"s{s}_{k}.dcm"
                out.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(out, enforce_file_format=True)
                files.append(out)
    return files
