"""De-identification at ingest, with DICOM PS3.15 Annex E (Basic Application Level Confidentiality
Profile) as the reference.

* :func:`load_salt` reads the pseudonymisation salt from an environment variable or a file that lives
  outside the repository and outside MLflow; :func:`init_salt` creates that file (mode 0600).
* :func:`pseudonym` turns an identifier into ``p-<16 hex>`` (patient), ``s-<16 hex>`` (study) or
  ``r-<16 hex>`` (record) with HMAC-SHA256 keyed by the salt: stable for one salt, unlinkable without it.
* :func:`deidentify` applies the Basic Profile action codes (table :data:`BASIC_PROFILE`) to a copy of a
  dataset, then three safety nets the table cannot miss: every remaining person name, date, time and
  UID (outside the technical UID whitelist) is blanked or remapped; private tags, overlays (60xx) and
  curves (50xx) are removed, in nested sequences too.
* :func:`technical_meta` is the whitelist of non-identifying header fields that may reach a manifest.
* :func:`is_burned_in` says whether a file declares burned-in annotation (such files are quarantined).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from covidscan.config import DeidConfig
from covidscan.errors import ConfigError

log = logging.getLogger(__name__)

PseudonymKind = Literal["patient", "study", "record"]
_PREFIX: dict[str, str] = {"patient": "p", "study": "s", "record": "r"}
PSEUDONYM_PATTERN = r"^[psr]-[0-9a-f]{16}$"

# PS3.15 Table E.1-1 action codes: D = replace with a dummy value, Z = zero length, X = remove,
# K = keep, U = replace UID consistently (remapped with the salt). Composite codes (Z/D, X/Z, X/D,
# X/Z/D, X/Z/U*) are resolved to the strictest one that keeps the file valid for our purposes.
BASIC_PROFILE: dict[str, str] = {
    # patient
    "PatientName": "Z",
    "PatientID": "Z",
    "IssuerOfPatientID": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientMotherBirthName": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "MedicalRecordLocator": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "AdditionalPatientHistory": "X",
    "PatientComments": "X",
    "PatientReligiousPreference": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientState": "X",
    "PregnancyStatus": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "SmokingStatus": "X",
    "LastMenstrualDate": "X",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "CurrentPatientLocation": "X",
    "PatientInstitutionResidence": "X",
    "PatientTransportArrangements": "X",
    "SpecialNeeds": "X",
    "ReferencedPatientAliasSequence": "X",
    "VisitComments": "X",
    "ServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "ReasonForTheRequestedProcedure": "X",
    "ReasonForStudy": "X",
    "RequestingService": "X",
    "ScheduledStationName": "X",
    "PerformedStationName": "X",
    "PerformedLocation": "X",
    "ScheduledProcedureStepLocation": "X",
    "IssuerOfAccessionNumberSequence": "X",
    "DigitalSignaturesSequence": "X",
    "OriginalAttributesSequence": "X",
    "ModifiedAttributesSequence": "X",
    "MACParametersSequence": "X",
    "DataSetTrailingPadding": "X",
    "PatientIdentityRemoved": "K",  # set to YES below
    # study / visit
    "StudyDate": "Z",
    "SeriesDate": "X",
    "AcquisitionDate": "X",
    "ContentDate": "Z",
    "OverlayDate": "X",
    "CurveDate": "X",
    "AcquisitionDateTime": "X",
    "StudyTime": "Z",
    "SeriesTime": "X",
    "AcquisitionTime": "X",
    "ContentTime": "Z",
    "OverlayTime": "X",
    "CurveTime": "X",
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "ScheduledProcedureStepDescription": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StudyDescription": "X",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmissionID": "X",
    "ImageComments": "X",
    "StudyComments": "X",
    "RequestAttributesSequence": "X",
    "ReferencedStudySequence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedImageSequence": "X",
    "SourceImageSequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "ContentSequence": "X",
    "DerivationDescription": "X",
    "TextString": "X",
    "TextComments": "X",
    "Impressions": "X",
    # people and places
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "ScheduledPerformingPhysicianName": "X",
    "PersonName": "X",
    "VerifyingObserverName": "X",
    "ContentCreatorName": "X",
    # device
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "DeviceUID": "U",
    "PlateID": "X",
    "GantryID": "X",
    "DetectorID": "X",
    "CassetteID": "X",
    "GeneratorID": "X",
    "SoftwareVersions": "X",
    "UID": "U",
    # UIDs
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "InstanceCreatorUID": "U",
    "StorageMediaFileSetUID": "U",
    "IrradiationEventUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "MediaStorageSOPInstanceUID": "U",
}

# UIDs that name a *kind* of thing (not an instance) and are kept: they identify nobody.
_TECHNICAL_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "MediaStorageSOPClassUID",
                   "ImplementationClassUID", "SOPClassesInStudy", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
                   "MappingResourceUID", "ContextUID"}

# The header fields that may leave ingest (technical, non-identifying). Everything else stays behind.
TECHNICAL_FIELDS: tuple[str, ...] = (
    "Modality", "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "ViewPosition",
    "PhotometricInterpretation", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "Rows", "Columns", "NumberOfFrames", "PixelSpacing", "ImagerPixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "KVP", "ExposureTime", "XRayTubeCurrent", "Exposure",
    "ConvolutionKernel", "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    "LossyImageCompression", "BurnedInAnnotation", "ImageType", "SOPClassUID", "TransferSyntaxUID",
)
_MAX_META_CHARS = 64


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _forbidden_location(path: Path) -> str | None:
    """Why a salt file may not live at ``path`` (inside a repository or MLflow store), else None."""
    resolved = path.expanduser().resolve()
    if any(part in {"mlruns", "mlartifacts"} for part in resolved.parts):
        return "inside an MLflow store"
    if _is_inside(resolved, Path.cwd().resolve()):
        return f"inside the working directory {Path.cwd()} (the project)"
    for parent in resolved.parents:
        if (parent / ".git").exists() or (parent / "dvc.yaml").exists():
            return f"inside the repository {parent}"
    return None


def salt_path(cfg: DeidConfig) -> Path:
    """The configured salt file, with ``~`` expanded."""
    return Path(os.path.expandvars(cfg.salt_file)).expanduser()


def load_salt(cfg: DeidConfig) -> bytes:
    """The pseudonymisation salt: environment variable ``cfg.salt_env``, else the file ``cfg.salt_file``.

    Args:
        cfg: the de-identification settings (``data.deid``).

    Returns:
        The salt as bytes (never logged).

    Raises:
        ConfigError: neither exists, the salt is too short, or the file is inside the repository or an
            MLflow store, or readable by other users.
    """
    value = os.environ.get(cfg.salt_env)
    origin = f"environment variable {cfg.salt_env}"
    if value is None:
        path = salt_path(cfg)
        if not path.is_file():
            raise ConfigError(
                f"no pseudonymisation salt: set the environment variable {cfg.salt_env} or create the file "
                f"{path} (data.deid.salt_file) with `covidscan salt init`; keep it outside the repository and MLflow"
            )
        where = _forbidden_location(path)
        if where:
            raise ConfigError(f"data.deid.salt_file {path} is {where}; move it outside the repository and MLflow")
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"salt file {path} is readable by other users; run `chmod 600 {path}`")
        value = path.read_text(encoding="utf-8")
        origin = f"file {path}"
    value = value.strip()
    if len(value) < cfg.min_salt_chars:
        raise ConfigError(f"the salt from the {origin} has {len(value)} characters; at least {cfg.min_salt_chars} expected")
    log.debug("pseudonymisation salt loaded from the %s", "environment" if origin.startswith("environment") else "salt file")
    return value.encode("utf-8")


def init_salt(cfg: DeidConfig, force: bool = False) -> Path:
    """Create the salt file (64 random hex characters, mode 0600) where ``cfg.salt_file`` says.

    Args:
        cfg: the de-identification settings.
        force: replace an existing file (every pseudonym changes: re-ingest everything).

    Raises:
        ConfigError: the file exists (without ``force``) or the location is inside the repository/MLflow.
    """
    path = salt_path(cfg)
    where = _forbidden_location(path)
    if where:
        raise ConfigError(f"data.deid.salt_file {path} is {where}; choose a location outside the repository and MLflow")
    if path.exists() and not force:
        raise ConfigError(f"salt file {path} already exists; pass --force to replace it (all pseudonyms change)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def pseudonym(value: str, salt: bytes, kind: PseudonymKind = "patient") -> str:
    """A salted, keyed pseudonym: ``p-``/``s-``/``r-`` + the first 16 hex digits of HMAC-SHA256.

    Args:
        value: the identifier (e.g. ``"<source>\\x1f<PatientID>"``); never stored.
        salt: the secret from :func:`load_salt`.
        kind: ``patient``, ``study`` or ``record`` (domain-separated: the same value gives unrelated
            pseudonyms for different kinds).
    """
    if kind not in _PREFIX:
        raise ValueError(f"pseudonym kind must be one of {sorted(_PREFIX)}, got {kind!r}")
    digest = hmac.new(salt, f"{kind}\x1f{value}".encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{_PREFIX[kind]}-{digest[:16]}"


def remap_uid(uid: str, salt: bytes | None) -> str:
    """A consistent replacement UID (``2.25.<int>``) for ``uid``; random when no salt is given."""
    if salt is None:
        return pydicom.uid.generate_uid(prefix=None)
    digest = hmac.new(salt, f"uid\x1f{uid}".encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


@contextmanager
def quiet_header_values() -> Iterator[None]:
    """Within the block pydicom does not validate values it reads.

    pydicom's default reading validation *warns and logs* an invalid value together with the value
    itself (e.g. an over-long institution name or a malformed birth date), which would put identifying
    text into logs. Ingest reads untrusted headers inside this block; de-identification then removes
    the values whatever their validity.
    """
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = previous


def _empty_value(elem: pydicom.DataElement) -> Any:
    return [] if elem.VR == "SQ" else None


def _apply(ds: Dataset, salt: bytes | None) -> None:
    """Apply the profile to one dataset level, recursing into the sequences that are kept."""
    ds.remove_private_tags()
    for elem in list(ds):
        tag = elem.tag
        group = tag.group
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:  # curves, overlays
            del ds[tag]
            continue
        keyword = elem.keyword
        action = BASIC_PROFILE.get(keyword)
        if action is None:
            # safety nets for attributes the table does not list
            if elem.VR == "PN":
                action = "Z"
            elif elem.VR in ("DA", "DT", "TM"):
                action = "X"
            elif elem.VR == "UI" and keyword not in _TECHNICAL_UIDS:
                action = "U"
            elif not keyword:  # unknown public tag: nothing says it is safe
                action = "X"
            else:
                action = "K"
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = _empty_value(elem)
        elif action == "U":
            if elem.VM > 1:
                elem.value = [remap_uid(str(v), salt) for v in elem.value]
            elif elem.value:
                elem.value = remap_uid(str(elem.value), salt)
        elif action == "K" and elem.VR == "SQ":
            for item in elem.value:
                _apply(item, salt)


def deidentify(ds: Dataset, salt: bytes | None = None) -> Dataset:
    """A de-identified copy of ``ds`` (the input is left unchanged).

    Args:
        ds: a pydicom dataset (header, with or without pixel data).
        salt: remaps UIDs consistently across files (same study -> same new StudyInstanceUID);
            without it the new UIDs are random.

    Returns:
        The copy, with PatientIdentityRemoved = YES and DeidentificationMethod naming the profile.
    """
    out = copy.deepcopy(ds)
    _apply(out, salt)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        new_meta = copy.deepcopy(meta)
        if "MediaStorageSOPInstanceUID" in new_meta and new_meta.MediaStorageSOPInstanceUID:
            new_meta.MediaStorageSOPInstanceUID = remap_uid(str(new_meta.MediaStorageSOPInstanceUID), salt)
        for tag in [t for t in new_meta.keys() if Tag(t).element >= 0x0100 and Tag(t).group == 0x0002]:
            del new_meta[tag]  # SourceApplicationEntityTitle and private application data
        out.file_meta = new_meta
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "covidscan: PS3.15 Basic Profile"
    return out


def _plain(value: Any) -> Any:
    """A JSON-able, length-limited copy of a header value."""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return None
    return str(value)[:_MAX_META_CHARS]


def technical_meta(ds: Dataset) -> dict[str, Any]:
    """The whitelisted technical fields of a header (:data:`TECHNICAL_FIELDS`) as plain values.

    Absent fields are left out. ``TransferSyntaxUID`` comes from the file meta when present.
    """
    meta: dict[str, Any] = {}
    for key in TECHNICAL_FIELDS:
        if key == "TransferSyntaxUID":
            fm = getattr(ds, "file_meta", None)
            value = fm.get("TransferSyntaxUID") if fm is not None else None
        else:
            value = ds.get(key)
        if value is None or value == "":
            continue
        plain = _plain(value)
        if plain is not None:
            meta[key] = plain
    return meta


def is_burned_in(ds: Dataset) -> bool:
    """True when the header declares burned-in annotation (BurnedInAnnotation == "YES")."""
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
