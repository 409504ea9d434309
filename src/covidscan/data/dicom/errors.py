"""The DICOM error types (every one a :class:`~covidscan.errors.DicomError`) and the helpers that raise them."""

from __future__ import annotations

import contextlib
import logging
import struct
from pathlib import Path
from collections.abc import Iterator

from covidscan.errors import DicomError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ errors
class NotDicomError(DicomError):
    """The file is not DICOM (no 'DICM' marker, no data elements) or cannot be parsed."""


class EmptyFileError(NotDicomError):
    """The file has zero bytes."""


class FileTooLargeError(DicomError):
    """The file is larger than ``DicomLimits.max_file_mb``."""


class TruncatedError(DicomError):
    """The file ends before the end of a data element (header or pixel data)."""


class MissingPixelDataError(DicomError):
    """The file has no Pixel Data element (e.g. a structured report or a header-only file)."""


class ShortPixelDataError(DicomError):
    """Pixel Data holds fewer bytes than Rows x Columns x frames x bytes per sample."""


class ImageTooLargeError(DicomError):
    """Rows, Columns, NumberOfFrames or the decoded size exceed ``DicomLimits``."""


class PixelFormatError(DicomError):
    """The Image Pixel module is unusable (no Rows, BitsStored > BitsAllocated, odd BitsAllocated...)."""


class HeaderValueError(DicomError):
    """A header element holds a value that cannot be used (not a number, wrong multiplicity...)."""


class UnsupportedTransferSyntaxError(DicomError):
    """No installed decoder handles the file's transfer syntax."""


class DecodeError(DicomError):
    """The decoder failed on the (compressed) pixel data, or produced an unexpected shape."""


class WrongModalityError(DicomError):
    """The Modality is not the one expected (CR/DX for X-ray, CT for CT)."""


class UnsupportedSOPClassError(DicomError):
    """The SOP class is not an image this reader supports (e.g. RT Structure Set, MR, SR)."""


class UnexpectedMultiFrameError(DicomError):
    """A multi-frame file where a single image is expected."""


class MissingRescaleError(DicomError):
    """A CT image without RescaleSlope/RescaleIntercept: Hounsfield units cannot be computed."""


class ColourImageError(DicomError):
    """A colour image (RGB, YBR, PALETTE COLOR): chest X-ray and CT must be greyscale."""


class MixedSeriesError(DicomError):
    """A folder holds more than one series (SeriesInstanceUID)."""


class InconsistentSeriesError(DicomError):
    """Slices of one series differ in matrix size, pixel spacing or orientation."""


class MissingGeometryError(DicomError):
    """A CT slice lacks ImagePositionPatient/ImageOrientationPatient needed to order it."""


class SliceSpacingError(DicomError):
    """The slice positions are not uniformly spaced."""


class SliceGapError(SliceSpacingError):
    """One or more slices are missing from an otherwise uniform series."""


class DuplicateSliceError(DicomError):
    """Two slices share a position along the slice normal."""


class NonAxialError(DicomError):
    """The series is coronal, sagittal or too oblique; the pipeline expects axial CT."""


class TooFewSlicesError(DicomError):
    """A series folder (or multi-frame file) with fewer than two slices, or more than allowed."""


class DecodeTimeoutError(DicomError):
    """:func:`decode_untrusted` ran past its timeout."""


class DecodeResourceError(DicomError):
    """:func:`decode_untrusted` hit its memory cap or its worker process died."""


# ----------------------------------------------------------------------------------------- raising
def _fail(cls: type[DicomError], path: Path | str, problem: str) -> DicomError:
    """Build a typed error whose message names the file first (one line: decoder texts are folded)."""
    return cls(f"{path}: {' '.join(problem.split())}")


@contextlib.contextmanager
def _typed_errors(path: Path) -> Iterator[None]:
    """At the public boundary: any failure on user input becomes a DicomError naming the file."""
    try:
        yield
    except DicomError:
        raise
    except MemoryError:
        raise _fail(DecodeResourceError, path, "out of memory while reading") from None
    except OSError as err:
        raise _fail(NotDicomError, path, f"cannot read the file ({type(err).__name__}: {err})") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, struct.error) as err:
        log.debug("malformed DICOM %s", path, exc_info=True)
        raise _fail(HeaderValueError, path, f"malformed DICOM header ({type(err).__name__}: {err})") from None
