"""Fake but realistic identifying DICOM header values, so de-identification has something to remove.

Every identifying value the generator writes comes from :func:`fake_identity`; a test can pass its own
function (same keys) to :func:`covidscan.data.synth.generate.generate` to plant sentinel strings.
None of these values ever appears in a file or folder name.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Identity = dict[str, str]
IdentityFn = Callable[[np.random.Generator], Identity]

# Keys that belong to the patient (kept when a patient has a further study); the rest are per study.
PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs", "PrivatePatientRef")
# The private block the writer adds: (group, creator, element offset) holding PrivatePatientRef.
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "COVIDSCAN SYNTH HIS"

_GIVEN = (
    "Wei", "Li", "Ming", "Hui", "Jun", "Ying", "Anna", "James", "Maria", "David", "Sofia", "Lucas", "Emma",
    "Noah", "Olivia", "Liam", "Mia", "Ethan", "Chloe", "Mateo", "Amara", "Kenji", "Aiko", "Ravi", "Priya",
    "Omar", "Leila", "Ivan", "Olga", "Pierre", "Claire", "Jonas", "Ingrid",
)
_FAMILY = (
    "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Smith", "Johnson",
    "Garcia", "Muller", "Rossi", "Dubois", "Novak", "Kowalski", "Tanaka", "Sato", "Kim", "Park", "Nguyen",
    "Singh", "Patel", "Haddad", "Petrov", "Larsen", "Silva", "Costa", "Okafor", "Mensah",
)
_INSTITUTIONS = (
    ("Northfield General Hospital", "12 Riverside Road, Northfield"),
    ("St. Aurelia Medical Centre", "400 Harbour Street, Port Aurelia"),
    ("Eastbrook University Hospital", "1 College Avenue, Eastbrook"),
    ("Lakeside Infectious Disease Hospital", "88 Lake Drive, Westmere"),
    ("Pinecrest Community Clinic", "7 Pine Lane, Pinecrest"),
)
_STATIONS = ("CT01", "CT02", "XR-A", "XR-B", "MOBILE1", "ED-DR")


def _name(rng: np.random.Generator) -> str:
    return f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}"


def _date(rng: np.random.Generator, start_year: int, end_year: int) -> str:
    year = int(rng.integers(start_year, end_year + 1))
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, 29))
    return f"{year:04d}{month:02d}{day:02d}"


def fake_identity(rng: np.random.Generator) -> Identity:
    """Draw one study's identifying header values (keys are DICOM keywords, plus ``PrivatePatientRef``).

    Args:
        rng: the case's identity stream (deterministic for a seed).

    Returns:
        PatientName, PatientID, PatientBirthDate, PatientSex, PatientAge, OtherPatientIDs, StudyDate,
        StudyTime, AccessionNumber, StudyID, InstitutionName, InstitutionAddress,
        ReferringPhysicianName, PerformingPhysicianName, OperatorsName, StationName,
        DeviceSerialNumber, PrivatePatientRef.
    """
    birth = _date(rng, 1935, 2001)
    study = _date(rng, 2019, 2020)
    age = int(study[:4]) - int(birth[:4])
    inst, addr = _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))]
    hh, mm, ss = int(rng.integers(7, 22)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    return {
        "PatientName": _name(rng),
        "PatientID": f"PID{int(rng.integers(10**7, 10**8)):08d}",
        "PatientBirthDate": birth,
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "PatientAge": f"{age:03d}Y",
        "OtherPatientIDs": f"MRN-{int(rng.integers(10**5, 10**6)):06d}",
        "StudyDate": study,
        "StudyTime": f"{hh:02d}{mm:02d}{ss:02d}",
        "AccessionNumber": f"ACC{int(rng.integers(10**6, 10**7)):07d}",
        "StudyID": f"{int(rng.integers(1, 10**5))}",
        "InstitutionName": inst,
        "InstitutionAddress": addr,
        "ReferringPhysicianName": f"Dr^{_name(rng)}",
        "PerformingPhysicianName": _name(rng),
        "OperatorsName": _name(rng),
        "StationName": _STATIONS[int(rng.integers(len(_STATIONS)))],
        "DeviceSerialNumber": f"SN{int(rng.integers(10**5, 10**6))}",
        "PrivatePatientRef": f"HIS:{int(rng.integers(10**8, 10**9))}",
    }
