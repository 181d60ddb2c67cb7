"""DICOM networking: the C-STORE/C-ECHO receiver and the C-STORE forwarder."""
