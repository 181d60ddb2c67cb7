"""Gantry: a DICOM de-identification gateway (PS3.15 Annex E), as a network node and in batch."""

__version__ = "0.1.0"
