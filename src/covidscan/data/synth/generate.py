"""Plan and write the synthetic hybrid dataset in the hospital-export layout (SPEC.md section 1).

Two steps: :func:`plan_dataset` draws every case's small description (patient, class, severity,
lesions, identity, clinical values, reads) without rendering anything; :func:`generate` renders and
writes each case straight to disk (one case in memory at a time), then the CSVs and ground_truth.json.

Layout written under ``out``::

    dicom/<source>[_<centre>]/<case>.dcm            X-ray, or an Enhanced CT (multi-frame) volume
    dicom/<source>[_<centre>]/<case>/<slice>.dcm    CT, one file per slice (names opaque, not z order)
    labels.csv       path,label,modality,source,centre,origin,rtpcr_initial,severity
    clinical.csv     path,wbc,neutrophil_pct,lymphocyte_pct,procalcitonin,crp
    annotations.csv  path,reader,slice_index,x0,y0,x1,y1
    reads.csv        path,reader,read
    ground_truth.json

``path`` is relative to ``out``. ``slice_index`` counts slices in ascending z (0 for X-ray), boxes are
pixel coordinates of the stored image (x = column), x1/y1 exclusive.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from covidscan.config import SynthConfig
from covidscan.data.synth.identity import PATIENT_KEYS, IdentityFn, fake_identity
from covidscan.data.synth.lesions import MILD_SEVERITY, Lesion, burden, sample_lesions
from covidscan.data.synth.phantom import Phantom, make_phantom, project_xray
from covidscan.data.synth.scales import SCALES, ScaleSpec
from covidscan.data.synth.sources import CLASS_ORDER, SOURCES, SynthSource, source_table
from covidscan.data.synth.truth import (
    ANNOTATORS,
    CLINICAL,
    INDICATORS,
    READERS,
    Box,
    clinical_values,
    jitter_box,
    make_box,
    pearson,
    reader_calls,
)
from covidscan.data.synth.writer import CTGeometry, StudyInfo, hu_to_stored, write_ct_multiframe, write_ct_slices, write_xray
from covidscan.errors import DataError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
OUTPUT_FILES = ("labels.csv", "clinical.csv", "annotations.csv", "reads.csv", "ground_truth.json")
LABEL_COLUMNS = ("path", "label", "modality", "source", "centre", "origin", "rtpcr_initial", "severity")
CLINICAL_COLUMNS = ("path", *INDICATORS)
ANNOTATION_COLUMNS = ("path", "reader", "slice_index", "x0", "y0", "x1", "y1")
READ_COLUMNS = ("path", "reader", "read")
XRAY_PATH_SCALE = 300.0  # water-equivalent mm mapped to full scale on the detector


@dataclass
class CasePlan:
    """Everything about one case except its pixels."""

    index: int
    key: str
    source: SynthSource
    label: str
    severity: float
    patient_seed: int
    case_seed: int
    identity: dict[str, str]
    scanner: tuple[str, str]
    lesions: list[Lesion]
    burden: float
    path: str
    rtpcr: str = ""
    reads: dict[str, int] = field(default_factory=dict)
    clinical: dict[str, float] | None = None

    @property
    def modality(self) -> str:
        return self.source.modality


@dataclass
class DatasetPlan:
    """All cases of one (scale, seed), plus the clinical model's statistics."""

    config: SynthConfig
    scale: ScaleSpec
    xray_size: int
    ct_size: int
    cases: list[CasePlan]
    clinical_stats: dict[str, object]


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_stable_int(*parts))


def _merge_patient(new: dict[str, str], patient: dict[str, str]) -> dict[str, str]:
    merged = dict(new)
    for key in PATIENT_KEYS:
        if key in patient:
            merged[key] = patient[key]
    birth, study = merged.get("PatientBirthDate", ""), merged.get("StudyDate", "")
    if "PatientAge" in merged and len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        merged["PatientAge"] = f"{max(0, int(study[:4]) - int(birth[:4])):03d}Y"
    return merged


def plan_dataset(config: SynthConfig, identity: IdentityFn = fake_identity) -> DatasetPlan:
    """Draw every case of the dataset (no pixels).

    Args:
        config: scale, seed and the generator's knobs.
        identity: the function that draws identifying header values (tests may plant sentinels).
    """
    scale = SCALES[config.scale]
    seed = config.seed
    cases: list[CasePlan] = []
    for source in SOURCES:
        for label in CLASS_ORDER:
            paper = source.counts.get(label, 0)
            if paper <= 0:
                continue
            clinical = label in source.clinical_classes
            n = scale.cases(paper, source.modality, clinical=clinical, source=source.key, label=label)
            patients: list[tuple[int, dict[str, str]]] = []
            for i in range(n):
                key = hashlib.sha256(f"{seed}|{source.key}|{source.modality}|{label}|{i}".encode()).hexdigest()[:16]
                case_seed = _stable_int(seed, key)
                rng = np.random.default_rng(case_seed)
                ident = identity(_rng(seed, key, "identity"))
                if patients and rng.random() < source.repeat_fraction:
                    patient_seed, patient_ident = patients[int(rng.integers(len(patients)))]
                    ident = _merge_patient(ident, patient_ident)
                else:
                    patient_seed = _stable_int(seed, key, "patient")
                    patients.append((patient_seed, ident))
                lo, hi = source.severity.get(label, (0.0, 0.0))
                severity = 0.0 if label == "normal" else float(rng.uniform(lo, hi))
                phantom = make_phantom(np.random.default_rng(patient_seed))
                lesions = sample_lesions(label, severity, phantom, _rng(seed, key, "lesions"))
                scanner = source.scanners[int(rng.integers(len(source.scanners)))]
                if source.modality == "ct" and source.layout == "slices":
                    path = f"dicom/{source.key}/{key}"
                else:
                    path = f"dicom/{source.key}/{key}.dcm"
                case = CasePlan(
                    index=len(cases), key=key, source=source, label=label, severity=round(severity, 4),
                    patient_seed=patient_seed, case_seed=case_seed, identity=ident, scanner=scanner,
                    lesions=lesions, burden=burden(lesions, phantom), path=path,
                )
                case.reads = reader_calls(label, _rng(seed, key, "reads"))
                cases.append(case)
    _assign_rtpcr(cases, config)
    stats = _assign_clinical(cases, config)
    return DatasetPlan(
        config=config,
        scale=scale,
        xray_size=config.xray_size or scale.xray_size,
        ct_size=config.ct_size or scale.ct_size,
        cases=cases,
        clinical_stats=stats,
    )


def _assign_rtpcr(cases: list[CasePlan], config: SynthConfig) -> None:
    """Initial RT-PCR: public sources unknown; covid19 positive except a share initially negative."""
    groups: dict[tuple[str, str, str], list[CasePlan]] = {}
    for case in cases:
        groups.setdefault((case.source.key, case.modality, case.label), []).append(case)
    for (skey, modality, label), members in groups.items():
        policy = members[0].source.rtpcr
        rng = _rng(config.seed, skey, modality, label, "rtpcr")
        if policy == "unknown":
            continue
        if label == "covid19":
            n_neg = int(round(config.rtpcr_negative_fraction * len(members)))
            negative = set(rng.permutation(len(members))[:n_neg].tolist())
            for i, case in enumerate(members):
                case.rtpcr = "negative" if i in negative else "positive"
        else:
            for case in members:
                # Yao et al. 2021: non-COVID patients before December 2019 were not tested
                case.rtpcr = "" if policy == "partly" and rng.random() < 0.5 else "negative"
    covid_tested = [c for c in cases if c.label == "covid19" and c.rtpcr]
    if config.rtpcr_negative_fraction > 0 and covid_tested and not any(c.rtpcr == "negative" for c in covid_tested):
        # guarantee Yao et al.'s subset "covid19 with a negative first RT-PCR" exists at every scale
        mild = [c for c in covid_tested if c.source.name == "mildct"] or covid_tested
        mild[0].rtpcr = "negative"


def _assign_clinical(cases: list[CasePlan], config: SynthConfig) -> dict[str, object]:
    groups: dict[tuple[str, str, str], list[CasePlan]] = {}
    for case in cases:
        if case.label in case.source.clinical_classes:
            groups.setdefault((case.source.key, case.modality, case.label), []).append(case)
    realised: dict[str, object] = {}
    for (skey, modality, label), members in sorted(groups.items()):
        burdens = np.array([c.burden for c in members])
        values = clinical_values(burdens, config.clinical_correlation, _rng(config.seed, skey, modality, label, "clinical"))
        for i, case in enumerate(members):
            case.clinical = {name: float(values[name][i]) for name in INDICATORS}
        realised[f"{skey}/{modality}/{label}"] = {
            "n": len(members),
            "pearson_r_with_burden": {name: _round(pearson(burdens, values[name])) for name in INDICATORS},
        }
    return realised


def _round(x: float, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


# -------------------------------------------------------------------------------------- render
def _study(plan: DatasetPlan, case: CasePlan) -> StudyInfo:
    return StudyInfo(
        uid_seed=f"{plan.config.seed}:{case.key}",
        identity=case.identity,
        manufacturer=case.scanner[0],
        model=case.scanner[1],
        transfer_syntax=case.source.transfer_syntax,
    )


def _phantom(case: CasePlan) -> Phantom:
    phantom = make_phantom(np.random.default_rng(case.patient_seed))
    phantom.lesions = [lesion.blob() for lesion in case.lesions]
    return phantom


def _render_xray(plan: DatasetPlan, case: CasePlan, root: Path) -> tuple[list[dict], dict]:
    src, size = case.source, plan.xray_size
    rng = np.random.default_rng([case.case_seed, 2])
    phantom = _phantom(case)
    fov = src.fov_mm
    ps = fov / size
    centre_z = 0.45 * phantom.lung_height + float(rng.normal(0, 12.0))
    xs = -fov / 2 + (np.arange(size) + 0.5) * ps
    zs = centre_z + fov / 2 - (np.arange(size) + 0.5) * ps  # row 0 = head
    path_mm = project_xray(phantom, xs, zs, plan.scale.xray_depth_samples)
    v = path_mm / XRAY_PATH_SCALE
    v = src.offset + src.gain * float(rng.uniform(0.95, 1.05)) * v
    v = cv2.GaussianBlur(v.astype(np.float32), (0, 0), sigmaX=max(0.5, 0.6 * size / 256))
    v = v + rng.normal(0.0, src.noise, v.shape).astype(np.float32)
    maxval = (1 << src.bits_stored) - 1
    stored = np.clip(np.rint(np.clip(v, 0.0, 1.0) * maxval), 0, maxval)
    window = None
    if src.bits_stored > 8:
        lo, hi = float(np.percentile(stored, 1)), float(np.percentile(stored, 99))
        window = ((lo + hi) / 2, max(1.0, hi - lo))
    if src.photometric == "MONOCHROME1":
        stored = maxval - stored
    stored = stored.astype(np.uint8 if src.bits_stored <= 8 else np.uint16)
    write_xray(
        root / case.path, stored, _study(plan, case), modality=src.dicom_modality, photometric=src.photometric,
        bits_stored=src.bits_stored, spacing_mm=ps, spacing_tag=src.pixel_spacing_tag, window=window,
    )
    # ground truth in pixels: centre (col, row) of each lesion; boxes for the 1-2 largest
    lesions_px = []
    for lesion in case.lesions:
        cx, _, cz = lesion.centre
        col, row = (cx - xs[0]) / ps, (zs[0] - cz) / ps
        lesions_px.append({"centre_px": [_round(col, 2), _round(row, 2)],
                           "centre_norm": [_round((col + 0.5) / size), _round((row + 0.5) / size)]})
    boxes = []
    order = sorted(range(len(case.lesions)), key=lambda i: -case.lesions[i].radii[0] * case.lesions[i].radii[2])
    n_boxes = min(len(order), 1 + int(rng.random() < 0.6))
    for i in order[:n_boxes]:
        lesion = case.lesions[i]
        col, row = lesions_px[i]["centre_px"]
        boxes.append((0, make_box(col, row, lesion.radii[0] / ps, lesion.radii[2] / ps, size, size)))
    geometry = {"rows": size, "cols": size, "pixel_spacing": _round(ps, 6)}
    return _annotate(case, boxes, size, size, rng), {"lesions_px": lesions_px, "geometry": geometry}


def _render_ct(plan: DatasetPlan, case: CasePlan, root: Path) -> tuple[list[dict], dict]:
    src, size = case.source, plan.ct_size
    rng = np.random.default_rng([case.case_seed, 2])
    phantom = _phantom(case)
    fov = src.fov_mm
    ps = fov / size
    n = plan.scale.ct_slices(src.paper_slices)
    scan = src.scan_mm * float(rng.uniform(0.96, 1.04))
    spacing = scan / n
    z0 = phantom.lung_height / 2 - scan / 2 + float(rng.normal(0, 8.0))
    zs = z0 + (np.arange(n) + 0.5) * spacing
    xy = -fov / 2 + (np.arange(size) + 0.5) * ps
    geom = CTGeometry(origin_xy=(float(xy[0]), float(xy[0])), z=[float(z) for z in zs], pixel_spacing=ps,
                      thickness=spacing, signed=src.signed)
    sub = int(min(3, max(1, math.ceil(spacing / 2.5))))  # partial-volume sub-samples per slab
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    yy, xx = np.meshgrid(xy, xy, indexing="ij")
    outside = (xx**2 + yy**2) > (fov / 2) ** 2
    study = _study(plan, case)
    folder = root / case.path
    names = [hashlib.sha256(f"{case.key}|{k}".encode()).hexdigest()[:12] + ".dcm" for k in range(n)]
    multiframe = src.layout == "multiframe"
    volume = np.empty((n, size, size), dtype=np.int16 if src.signed else np.uint16) if multiframe else None
    chunk = max(1, int(2_000_000 // (size * size * sub)))
    for start in range(0, n, chunk):
        zc = zs[start : start + chunk]
        zsub = (zc[:, None] + offsets[None, :] * spacing).ravel()
        hu = phantom.render(xy, xy, zsub).reshape(len(zc), sub, size, size).mean(axis=1)
        hu = hu + src.offset + rng.normal(0.0, src.noise, hu.shape).astype(np.float32)
        if src.outside_fov_hu is not None:
            hu[:, outside] = src.outside_fov_hu
        stored = hu_to_stored(hu, src.signed)
        if multiframe:
            volume[start : start + len(zc)] = stored  # type: ignore[index]
        else:
            write_ct_slices(folder, stored, start, n, study, geom, names, src.instance_descending)
    if multiframe:
        write_ct_multiframe(folder, volume, study, geom)  # type: ignore[arg-type]

    # ground truth: lesion centres in (col, row, slice); 2-5 annotated slices with their boxes
    lesions_px = []
    for lesion in case.lesions:
        cx, cy, cz = lesion.centre
        col, row, sl = (cx - xy[0]) / ps, (cy - xy[0]) / ps, (cz - zs[0]) / spacing
        lesions_px.append({"centre_px": [_round(col, 2), _round(row, 2), _round(sl, 2)],
                           "centre_norm": [_round((col + 0.5) / size), _round((row + 0.5) / size), _round((sl + 0.5) / n)]})
    boxes: list[tuple[int, Box]] = []
    if case.lesions:
        by_size = sorted(range(len(case.lesions)), key=lambda i: -case.lesions[i].volume_ml)
        slices: list[int] = []
        for i in by_size:
            k = int(np.clip(round((case.lesions[i].centre[2] - zs[0]) / spacing), 0, n - 1))
            if k not in slices:
                slices.append(k)
        big = case.lesions[by_size[0]]
        k_big = slices[0]
        for step in (1, -1, 2, -2):
            if len(slices) >= 2:
                break
            k = k_big + step
            if 0 <= k < n and abs(zs[k] - big.centre[2]) < big.radii[2] and k not in slices:
                slices.append(k)
        if len(slices) < 2:  # lesion thinner than a slice: annotate the neighbouring slab too
            slices.append(k_big + 1 if k_big + 1 < n else k_big - 1)
        slices = sorted(slices[:5])
        for k in slices:
            on_slice = []
            for i in by_size:
                lesion = case.lesions[i]
                d = abs(zs[k] - lesion.centre[2])
                centre_slice = int(np.clip(round((lesion.centre[2] - zs[0]) / spacing), 0, n - 1)) == k
                if d < 0.87 * lesion.radii[2] or centre_slice or (i == by_size[0] and not on_slice):
                    f = math.sqrt(max(0.25, 1.0 - (d / lesion.radii[2]) ** 2))
                    col, row = lesions_px[i]["centre_px"][:2]
                    on_slice.append(make_box(col, row, f * lesion.radii[0] / ps, f * lesion.radii[1] / ps, size, size))
            boxes += [(k, b) for b in on_slice[:3]]
    geometry = {"rows": size, "cols": size, "slices": n, "pixel_spacing": _round(ps, 6), "slice_spacing": _round(spacing, 4)}
    return _annotate(case, boxes, size, size, rng), {"lesions_px": lesions_px, "geometry": geometry}


def _annotate(case: CasePlan, boxes: list[tuple[int, Box]], rows: int, cols: int, rng: np.random.Generator) -> list[dict]:
    out = []
    for slice_index, box in boxes:
        for reader in ANNOTATORS:
            b = box if reader == "adjudicated" else jitter_box(box, rng, rows, cols)
            out.append({"path": case.path, "reader": reader, "slice_index": slice_index,
                        "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3]})
    return out


# --------------------------------------------------------------------------------------- write
def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / "ground_truth.json").is_file():
            raise DataError(f"{out}: exists, is not empty and is not a synthetic dataset; refusing to overwrite it")
        shutil.rmtree(out / "dicom", ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_fmt(row[c]) for c in columns])


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote."""

    out: Path
    n_xray: int
    n_ct: int
    n_files: int
    counts: dict[str, int]  # "<modality>/<source>/<centre>/<label>" -> cases


def generate(
    config: SynthConfig,
    out: str | Path,
    identity: IdentityFn = fake_identity,
    on_case: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write the synthetic hybrid dataset for ``config`` (scale, seed) under ``out``.

    Deterministic: the same config gives byte-identical files. ``out`` must be empty, absent, or a
    previous synthetic dataset (which is replaced).

    Args:
        config: scale, seed and knobs (see :class:`covidscan.config.SynthConfig`).
        out: the dataset root.
        identity: draws the identifying header values of a study (default :func:`fake_identity`).
        on_case: called as ``on_case(done, total)`` after each case (progress display).

    Raises:
        DataError: ``out`` holds something else.
    """
    out = Path(out)
    _prepare_out(out)
    plan = plan_dataset(config, identity=identity)
    log.info("synth: %d cases (scale %s, seed %d) -> %s", len(plan.cases), config.scale, config.seed, out)
    labels, clinical, annotations, reads = [], [], [], []
    cases_truth: dict[str, dict] = {}
    for i, case in enumerate(plan.cases):
        render = _render_xray if case.modality == "xray" else _render_ct
        boxes, extra = render(plan, case, out)
        annotations += boxes
        labels.append({
            "path": case.path, "label": case.label, "modality": case.modality, "source": case.source.name,
            "centre": case.source.centre, "origin": case.source.origin, "rtpcr_initial": case.rtpcr,
            "severity": case.severity,
        })
        if case.clinical is not None:
            clinical.append({"path": case.path, **case.clinical})
        reads += [{"path": case.path, "reader": r, "read": v} for r, v in case.reads.items()]
        cases_truth[case.path] = {
            "label": case.label, "source": case.source.name, "centre": case.source.centre,
            "severity": case.severity, "mild": bool(case.label != "normal" and case.severity < MILD_SEVERITY),
            "burden": _round(case.burden, 6), "scanner": list(case.scanner), **extra["geometry"],
            "lesions": [
                {"kind": l.kind, "centre_mm": [_round(c, 2) for c in l.centre], "radii_mm": [_round(r, 2) for r in l.radii],
                 "hu": _round(l.hu, 1), **px}
                for l, px in zip(case.lesions, extra["lesions_px"])
            ],
        }
        if on_case is not None:
            on_case(i + 1, len(plan.cases))
    _write_csv(out / "labels.csv", LABEL_COLUMNS, labels)
    _write_csv(out / "clinical.csv", CLINICAL_COLUMNS, clinical)
    _write_csv(out / "annotations.csv", ANNOTATION_COLUMNS, annotations)
    _write_csv(out / "reads.csv", READ_COLUMNS, reads)
    truth = _ground_truth(plan, cases_truth)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    counts: dict[str, int] = {}
    for case in plan.cases:
        k = f"{case.modality}/{case.source.name}/{case.source.centre}/{case.label}"
        counts[k] = counts.get(k, 0) + 1
    n_files = sum(1 for p in (out / "dicom").rglob("*.dcm"))
    return SynthSummary(out=out, n_xray=sum(c.modality == "xray" for c in plan.cases),
                        n_ct=sum(c.modality == "ct" for c in plan.cases), n_files=n_files, counts=counts)


def _ground_truth(plan: DatasetPlan, cases: dict[str, dict]) -> dict:
    # realised reader performance over the whole dataset (covid19 vs rest)
    realised_readers = {}
    labels = np.array([c.label == "covid19" for c in plan.cases])
    for name, (sens, spec) in READERS.items():
        calls = np.array([c.reads[name] for c in plan.cases])
        realised_readers[name] = {
            "stated_sensitivity": sens, "stated_specificity": spec,
            "realised_sensitivity": _round(float(calls[labels].mean())) if labels.any() else None,
            "realised_specificity": _round(float(1 - calls[~labels].mean())) if (~labels).any() else None,
        }
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": plan.config.seed,
        "scale": plan.config.scale,
        "scale_spec": {"xray_size": plan.xray_size, "ct_size": plan.ct_size, "xray_fraction": plan.scale.xray_fraction,
                       "ct_fraction": plan.scale.ct_fraction, "xray_min": plan.scale.xray_min, "ct_min": plan.scale.ct_min,
                       "min_clinical": plan.scale.min_clinical,
                       "slices": list(plan.scale.slices) if plan.scale.slices else None},
        "sources": source_table(),
        "readers": realised_readers,
        "clinical": {
            "target": "burden (density-weighted lesion volume / lung volume)",
            "stated_correlation": {name: CLINICAL[name][2] * plan.config.clinical_correlation for name in INDICATORS},
            "units": {"wbc": "10^9/L", "neutrophil_pct": "%", "lymphocyte_pct": "%", "procalcitonin": "ng/mL", "crp": "mg/L"},
            "realised": plan.clinical_stats,
        },
        "rtpcr_negative_fraction": plan.config.rtpcr_negative_fraction,
        "mild_severity_below": MILD_SEVERITY,
        "box_rule": "centred on the lesion, side = lesion extent clipped to 16-64 px at 512 px (scaled)",
        "cases": cases,
    }
