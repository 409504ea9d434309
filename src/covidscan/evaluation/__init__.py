"""Statistics of trained models (SPEC.md section 5): indices, curves, bootstrap, readers, regression,
and the per-model report. Pure functions on numpy arrays; no model or framework code."""
