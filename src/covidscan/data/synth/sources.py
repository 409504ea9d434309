"""The synthetic sources / centres and their acquisition quirks, mirroring the papers' data.

Liang et al. 2020 (Table 1): public X-ray (RSNA-like normal/pneumonia, CCD-like covid19), public CT
(LUNA16-like normal, ICNP-like pneumonia) and one hospital (Youan-like: X-ray and CT of all four
classes, clinical indicators for the CT covid19 cases). Yao et al. 2021: four CT centres (covid19,
pneumonia = CAP, normal = NP), mild cases only, so that a centre can be held out (centre_d is the
independent test centre).

``counts`` are the paper-scale case counts per class (train-val + test of Table 1; for Yao et al. 2021 the
split of its 1538 training patients over three centres and of the 336 test non-COVID patients into
CAP/NP is assumed).
"""

from __future__ import annotations

from dataclasses import dataclass

CLASS_ORDER = ("normal", "pneumonia", "covid19", "influenza")


@dataclass(frozen=True)
class SynthSource:
    """One source (and centre) of the synthetic hybrid dataset.

    Args:
        name: the ``source`` column.
        centre: the ``centre`` column.
        modality: "xray" | "ct".
        origin: "public" | "hospital".
        counts: paper-scale cases per class.
        severity: per class, (low, high) of the uniform severity draw.
        dicom_modality: "CR" | "DX" | "CT".
        scanners: (Manufacturer, ManufacturerModelName) pairs; each case draws one.
        fov_mm: field of view (mm) across the matrix; pixel spacing = fov / size.
        photometric: "MONOCHROME1" | "MONOCHROME2" (X-ray).
        bits_stored: X-ray bits (CT: 12 unsigned or 16 signed, see ``signed``).
        transfer_syntax: "explicit" | "implicit" | "jpegls" | "rle" | "j2k".
        noise: X-ray: relative noise sd; CT: HU noise sd.
        offset: X-ray: relative pedestal added to the signal; CT: HU calibration offset.
        gain: X-ray contrast gain.
        thickness_mm: CT slice thickness (= spacing, contiguous reconstruction).
        scan_mm: CT scan length along z (paper-scale slice count = scan_mm / thickness_mm).
        layout: CT: "slices" (one file per slice, shuffled names) or "multiframe" (Enhanced CT).
        signed: CT pixel representation: True = int16 with intercept 0, False = 12-bit unsigned, -1024.
        outside_fov_hu: CT value outside the reconstruction circle (None = keep air).
        instance_descending: CT InstanceNumber runs head to foot (so it disagrees with z order).
        pixel_spacing_tag: X-ray: "PixelSpacing" or "ImagerPixelSpacing" (DX detectors).
        rtpcr: "unknown" (public: ""), "tested" (hospital), "partly" (Yao et al. 2021: non-COVID before
            December 2019 untested).
        clinical_classes: classes that get the five clinical indicators.
        repeat_fraction: share of cases that are a further study of an earlier patient.
    """

    name: str
    centre: str
    modality: str
    origin: str
    counts: dict[str, int]
    severity: dict[str, tuple[float, float]]
    dicom_modality: str
    scanners: tuple[tuple[str, str], ...]
    fov_mm: float
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    transfer_syntax: str = "explicit"
    noise: float = 0.01
    offset: float = 0.0
    gain: float = 1.0
    thickness_mm: float = 5.0
    scan_mm: float = 340.0
    layout: str = "slices"
    signed: bool = False
    outside_fov_hu: float | None = None
    instance_descending: bool = False
    pixel_spacing_tag: str = "PixelSpacing"
    rtpcr: str = "unknown"
    clinical_classes: tuple[str, ...] = ()
    repeat_fraction: float = 0.0

    @property
    def key(self) -> str:
        """Folder under dicom/: modality, source and centre (none of them identifies a patient)."""
        return f"{self.modality}/{self.name}" if self.name == self.centre else f"{self.modality}/{self.name}_{self.centre}"

    @property
    def paper_slices(self) -> int:
        return int(round(self.scan_mm / self.thickness_mm))


_MILD = (0.05, 0.35)
_GE_CT = (("GE MEDICAL SYSTEMS", "Optima CT660"), ("GE MEDICAL SYSTEMS", "Revolution EVO"))
_SIEMENS_CT = (("SIEMENS", "SOMATOM Definition AS"), ("SIEMENS", "SOMATOM Perspective"))


def _mild_centre(centre: str, counts: tuple[int, int, int], **quirks) -> SynthSource:
    covid, cap, np_ = counts
    return SynthSource(
        name="mildct",
        centre=centre,
        modality="ct",
        origin="hospital",
        counts={"covid19": covid, "pneumonia": cap, "normal": np_},
        severity={"covid19": _MILD, "pneumonia": _MILD},
        dicom_modality="CT",
        rtpcr="partly",
        **quirks,
    )


SOURCES: tuple[SynthSource, ...] = (
    # ------------------------------------------------------------------ public X-ray (Liang et al. 2020)
    SynthSource(
        name="rsna", centre="rsna", modality="xray", origin="public",
        counts={"normal": 5100, "pneumonia": 3100},
        severity={"pneumonia": (0.3, 1.0)},
        dicom_modality="CR", scanners=(("", ""),), fov_mm=420.0,
        bits_stored=8, noise=0.02, offset=0.02, gain=0.95, repeat_fraction=0.05,
    ),
    SynthSource(
        name="ccd", centre="ccd", modality="xray", origin="public",
        counts={"covid19": 212},
        severity={"covid19": (0.3, 1.0)},
        dicom_modality="DX", scanners=(("Carestream Health", "DRX-Revolution"), ("Agfa", "DX-D 300")),
        fov_mm=400.0, bits_stored=10, transfer_syntax="jpegls", noise=0.03, offset=0.06, gain=0.85,
        pixel_spacing_tag="ImagerPixelSpacing", repeat_fraction=0.15,
    ),
    # ------------------------------------------------------------------- public CT (Liang et al. 2020)
    SynthSource(
        name="luna16", centre="luna16", modality="ct", origin="public",
        counts={"normal": 120},
        severity={},
        dicom_modality="CT", scanners=(("GE MEDICAL SYSTEMS", "LightSpeed16"), ("SIEMENS", "Sensation 16"),
                                       ("Philips", "Brilliance 16P")),
        fov_mm=360.0, noise=18.0, thickness_mm=1.25, scan_mm=340.0,
    ),
    SynthSource(
        name="icnp", centre="icnp", modality="ct", origin="public",
        counts={"pneumonia": 103},
        severity={"pneumonia": (0.3, 1.0)},
        dicom_modality="CT", scanners=(("TOSHIBA", "Aquilion"),),
        fov_mm=380.0, noise=25.0, offset=12.0, thickness_mm=5.0, scan_mm=330.0, signed=True,
        transfer_syntax="rle",
    ),
    # -------------------------------------------------------------- hospital (Youan-like, Liang et al. 2020)
    SynthSource(
        name="youan", centre="youan", modality="xray", origin="hospital",
        counts={"normal": 503, "pneumonia": 435, "covid19": 45, "influenza": 145},
        severity={"pneumonia": (0.2, 1.0), "covid19": (0.1, 1.0), "influenza": (0.2, 0.9)},
        dicom_modality="CR", scanners=(("FUJIFILM Corporation", "FCR PROFECT CS"),),
        fov_mm=430.0, photometric="MONOCHROME1", bits_stored=12, noise=0.015, offset=0.0, gain=1.0,
        rtpcr="tested", repeat_fraction=0.1,
    ),
    SynthSource(
        name="youan", centre="youan", modality="ct", origin="hospital",
        counts={"normal": 159, "pneumonia": 215, "covid19": 95, "influenza": 50},
        severity={"pneumonia": (0.2, 1.0), "covid19": (0.1, 1.0), "influenza": (0.2, 0.9)},
        dicom_modality="CT", scanners=(("SIEMENS", "SOMATOM Definition Flash"),),
        fov_mm=350.0, noise=15.0, thickness_mm=2.0, scan_mm=320.0,
        rtpcr="tested", clinical_classes=("covid19",), instance_descending=True,
    ),
    # ------------------------------------------------------------ four CT centres (Yao et al. 2021, mild)
    _mild_centre("centre_a", (150, 230, 220), scanners=_GE_CT, fov_mm=360.0, noise=20.0,
                 thickness_mm=5.0, scan_mm=465.0),
    _mild_centre("centre_b", (120, 200, 180), scanners=_SIEMENS_CT, fov_mm=340.0, noise=14.0, offset=-8.0,
                 thickness_mm=1.0, scan_mm=340.0, signed=True, outside_fov_hu=-3024.0),
    _mild_centre("centre_c", (85, 165, 188), scanners=_SIEMENS_CT, fov_mm=370.0, noise=16.0,
                 thickness_mm=2.0, scan_mm=360.0, layout="multiframe"),
    _mild_centre("centre_d", (213, 168, 168), scanners=_GE_CT, fov_mm=380.0, noise=22.0, offset=6.0,
                 thickness_mm=1.25, scan_mm=350.0, instance_descending=True),
)


def source_table() -> list[dict[str, object]]:
    """The sources and their quirks as plain data (for ground_truth.json)."""
    rows = []
    for s in SOURCES:
        rows.append(
            {
                "source": s.name, "centre": s.centre, "modality": s.modality, "origin": s.origin,
                "paper_counts": dict(sorted(s.counts.items())), "dicom_modality": s.dicom_modality,
                "scanners": [list(x) for x in s.scanners], "fov_mm": s.fov_mm, "photometric": s.photometric,
                "bits_stored": s.bits_stored if s.modality == "xray" else (16 if s.signed else 12),
                "transfer_syntax": s.transfer_syntax, "noise": s.noise, "offset": s.offset, "gain": s.gain,
                "thickness_mm": s.thickness_mm if s.modality == "ct" else None,
                "layout": s.layout if s.modality == "ct" else "file",
                "outside_fov_hu": s.outside_fov_hu, "instance_descending": s.instance_descending,
                "pixel_spacing_tag": s.pixel_spacing_tag, "rtpcr": s.rtpcr,
                "clinical_classes": list(s.clinical_classes), "repeat_fraction": s.repeat_fraction,
                "severity": {k: list(v) for k, v in sorted(s.severity.items())},
            }
        )
    return rows
