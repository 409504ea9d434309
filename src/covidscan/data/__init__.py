"""Data: DICOM reading, de-identification, synthetic data, sources, manifest, splits."""
