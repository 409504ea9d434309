"""Typed errors a user can cause. The CLI prints them as one line; the service maps them to 4xx."""

from __future__ import annotations


class CovidscanError(Exception):
    """Base class: a problem with the user's input, data or configuration (not a bug)."""

    exit_code = 2


class ConfigError(CovidscanError):
    """params.yaml (or an override) is malformed, names an unknown key or has a wrong type."""


class DeviceUnavailable(ConfigError):
    """The configured device (``run.device``, ``COVIDSCAN_DEVICE``) is ``cuda`` and there is no CUDA device."""


class DataError(CovidscanError):
    """Input data is missing, unreadable or does not match what is expected."""


class NoTestRecords(DataError):
    """An experiment's test parts hold no record the model can take (its sub-datasets selected nothing)."""


class NoTrainingData(DataError):
    """A training stage's sub-dataset has no train-val records (the sources hold none of its kind):
    the stage writes explicit empty outputs and says why in its metrics, instead of failing."""


class NoModelTrained(DataError):
    """A model file is the explicit empty output of a stage that had nothing to train (its sub-dataset
    selected no records); the stage's metrics say why."""


class DicomError(DataError):
    """A DICOM file or series cannot be used; the message names the file and the problem."""


class ValidationFailed(DataError):
    """A data-quality gate (Great Expectations) failed; the message summarises what broke."""


class ModelConfigError(CovidscanError):
    """A model configuration that cannot work (e.g. a feature map below 1x1)."""
