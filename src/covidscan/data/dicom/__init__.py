"""Reading DICOM: chest X-ray (CR/DX) and CT images, CT series assembly, strict checks for untrusted files.

This package is the only place where photometric interpretation and LUT handling live:

* X-ray (CR, DX): Modality LUT (rescale or LUT sequence), then the VOI LUT (LUT sequence or the first
  window) where the file has one, then MONOCHROME1 is inverted so that bright = dense.
* CT: stored values x RescaleSlope + RescaleIntercept = Hounsfield units (rescale tags are required).
  Pixels equal to PixelPaddingValue (outside the reconstruction circle) become ``limits.padding_hu``.
* Series: a folder with one file per slice, or one (enhanced) multi-frame file. Slices are ordered by
  ImagePositionPatient projected on the slice normal (ImageOrientationPatient), never by file name or
  InstanceNumber; spacing must be uniform, without duplicates or gaps, and the series axial.

Every problem a file can cause is a :class:`~covidscan.errors.DicomError` subclass whose message
starts with the file's path. Sizes are checked against :class:`~covidscan.config.DicomLimits` (file
size, Rows x Columns x frames, the declared PixelData length, the codestream's own dimensions) before
anything large is read or decoded. :func:`decode_untrusted` additionally runs the decode in a child
process with an address-space limit and a timeout.

``meta`` dictionaries carry technical, non-identifying fields only (a whitelist, :data:`META_FIELDS`).

Headers are parsed with pydicom's reading validation set to RAISE (``config.strict_reading``), so
a file that ends inside an element is an error rather than a warning; pydicom's setting is global,
so those parses are serialised under a module lock (pixel decoding is not).

Modules (each imports only from those listed above it):

* ``errors``: the typed errors (``NotDicomError``, ``TruncatedError``...) and the helpers that raise them.
* ``results``: what the readers return, :class:`DicomImage` and :class:`CTVolume`.
* ``headers``: accepted modalities and SOP classes, size constants, header value parsing, ``meta_from``.
* ``files``: file-level checks (size, signature, truncation, deflate bombs), the strict parse, ``read_header``.
* ``checks``: image-level header checks before decoding (modality, photometric, sizes, codestreams).
* ``image``: decoding one image, Modality/VOI LUT and MONOCHROME1 (X-ray), HU (CT), ``read_image``.
* ``series``: CT series assembly, slice ordering and spacing checks, ``read_series``.
* ``decoder``: ``decode_untrusted`` (and ``decode_untrusted_picture`` for PNG/JPEG), the decode in a memory-capped, timed child process;
  ``DecoderPool``, pre-started sandboxed workers for a service.
* ``inspect``: ``inspect_path`` and :class:`InspectReport`, the text behind ``covidscan inspect``.
"""

from covidscan.data.dicom.errors import (
    ColourImageError,
    DecodeError,
    DecodeResourceError,
    DecodeTimeoutError,
    DuplicateSliceError,
    EmptyFileError,
    FileTooLargeError,
    HeaderValueError,
    ImageTooLargeError,
    InconsistentSeriesError,
    MissingGeometryError,
    MissingPixelDataError,
    MissingRescaleError,
    MixedSeriesError,
    NonAxialError,
    NotDicomError,
    PixelFormatError,
    ShortPixelDataError,
    SliceGapError,
    SliceSpacingError,
    TooFewSlicesError,
    TruncatedError,
    UnexpectedMultiFrameError,
    UnsupportedSOPClassError,
    UnsupportedTransferSyntaxError,
    WrongModalityError,
)
from covidscan.data.dicom.results import CTVolume, DicomImage
from covidscan.data.dicom.headers import CT_MODALITIES, META_FIELDS, SUPPORTED_SOP_CLASSES, XRAY_MODALITIES, meta_from
from covidscan.data.dicom.files import read_header
from covidscan.data.dicom.image import read_image
from covidscan.data.dicom.series import read_series
from covidscan.data.dicom.decoder import DecoderPool, decode_untrusted, decode_untrusted_picture, picture_job
from covidscan.data.dicom.inspect import InspectReport, inspect_path

__all__ = [
    "CTVolume",
    "DecoderPool",
    "DicomImage",
    "InspectReport",
    "decode_untrusted",
    "decode_untrusted_picture",
    "inspect_path",
    "picture_job",
    "read_header",
    "read_image",
    "read_series",
]
