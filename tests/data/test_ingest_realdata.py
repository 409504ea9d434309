"""Adapters and ingest on the real public images in ../shared/realdata-dev (skipped when absent).

Nothing is copied: the tests arrange the layouts each adapter expects in a temporary folder with
symbolic links into realdata-dev. Only small subsets are ingested (the CPU is shared).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from covidscan.config import DataConfig, SourceSpec
from covidscan.data import manifest as mf
from covidscan.data.ingest import ingest
from covidscan.data.sources import get_adapter

from tests.conftest import REALDATA

SALT = b"realdata-test-salt-0123456789abcdef"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata-dev is absent"),
]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.read_csv(REALDATA / "manifest.csv", dtype=str, keep_default_na=False)


def _write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _sample(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to n rows per (modality, label, source), in file order: deterministic and varied."""
    return df.groupby(["modality", "label", "source"], sort=True).head(n)


def test_csv_adapter_lists_every_image_with_sensible_labels(rows):
    spec = SourceSpec(name="realdev", adapter="csv", location=str(REALDATA / "manifest.csv"))
    adapter = get_adapter("csv")(spec)
    recs = adapter.records()
    assert len(recs) == len(rows) and not adapter.skipped
    got = Counter((r.modality, r.label) for r in recs)
    covid = rows[rows.label == "covid"]
    assert got[("xray", "covid19")] + got[("ct", "covid19")] == len(covid)
    # every non-COVID X-ray is mapped from its finding: only the 'No Finding' ones become normal
    no_finding = rows[(rows.modality == "cxr") & rows.finding.str.lower().str.contains("no finding")]
    assert got[("xray", "normal")] == len(no_finding)
    assert got[("xray", "pneumonia")] == len(rows[(rows.modality == "cxr") & (rows.label == "non_covid")]) - len(no_finding)
    assert {r.kind for r in recs if r.modality == "ct"} == {"ct_slice2d"}


def test_csv_adapter_ingests_real_images(rows, tmp_path):
    src = tmp_path / "realdev"
    for folder in ("ct", "cxr"):
        _link(REALDATA / folder, src / folder)
    subset = _sample(rows, 2)
    _write_csv(src / "manifest.csv", subset.to_dict("records"))
    spec = SourceSpec(name="realdev", adapter="csv", location=str(src), centre="dev")
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    df = mf.read_manifest(summary.out_dir)
    assert len(df) == len(subset) and summary.n_quarantined == 0
    by_sha = dict(zip(df.content_sha256, df.array_path))
    for row in df.itertuples():
        img = np.load(summary.out_dir / row.array_path)
        assert img.dtype == np.float32 and img.shape == (row.rows, row.cols)
        assert 0 <= img.min() and img.max() <= 255 and img.std() > 1  # a real picture, grey
    sizes = sorted(zip(subset.height.astype(int), subset.width.astype(int)))
    assert sorted(zip(df.rows, df.cols)) == sizes
    text = [str(v) for v in df.to_numpy().ravel()]
    for original in subset.patient_id.tolist() + subset.path.tolist():
        assert original not in text
    assert len(by_sha) == df.content_sha256.nunique()


def test_csv_adapter_quarantines_bad_rows_among_real_images(rows, tmp_path):
    src = tmp_path / "realdev"
    for folder in ("ct", "cxr"):
        _link(REALDATA / folder, src / folder)
    subset = _sample(rows, 1)
    bad = []
    for suffix in (".jpg", ".png"):
        real = rows[rows.path.str.endswith(suffix)].iloc[0]
        data = (REALDATA / real.path).read_bytes()
        cut = src / "cut" / f"cut{suffix}"
        cut.parent.mkdir(parents=True, exist_ok=True)
        cut.write_bytes(data[: len(data) // 2])  # a real image cut short, as an interrupted download leaves it
        bad.append({**real.to_dict(), "path": f"cut/cut{suffix}"})
    first = subset.iloc[0].to_dict()
    bad.append({**first, "path": "cxr/covid/not_there.png"})
    _link(REALDATA / first["path"], src / "other" / f"tb{Path(first['path']).suffix}")
    bad.append({**first, "path": f"other/tb{Path(first['path']).suffix}", "label": "tuberculosis"})
    _write_csv(src / "manifest.csv", subset.to_dict("records") + bad)
    spec = SourceSpec(name="realdev", adapter="csv", location=str(src))
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    df = mf.read_manifest(summary.out_dir)
    assert len(df) == len(subset)
    n = len(subset) + 1  # the CSV line of the last good row
    q = mf.read_table(summary.out_dir / mf.QUARANTINE_FILE, mf.QUARANTINE_SCHEMA)
    assert dict(zip(q.row, q.reason)) == {n + 1: "truncated", n + 2: "truncated", n + 3: "missing_file",
                                          n + 4: "unknown label 'tuberculosis'"}
    assert summary.quarantined["realdev"] == {"truncated": 2, "missing_file": 1, "unknown label 'tuberculosis'": 1}


def test_ccd_adapter_on_real_ccd_images(rows, tmp_path):
    root = tmp_path / "ccd"
    ccd = _sample(rows[rows.source == "ccd"], 4)
    meta = []
    for r in ccd.itertuples():
        name = Path(r.source_path).name
        _link(REALDATA / r.path, root / "images" / name)
        meta.append({"patientid": r.orig_patient_id, "offset": "", "finding": r.finding, "RT_PCR_positive": "",
                     "view": r.view, "modality": "X-ray" if r.modality == "cxr" else "CT", "folder": "images",
                     "filename": name})
    _write_csv(root / "metadata.csv", meta)
    spec = SourceSpec(name="ccd", adapter="ccd", location=str(root))
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    df = mf.read_manifest(summary.out_dir)
    expected_covid = int((ccd.label == "covid").sum())
    assert (df.label == "covid19").sum() == expected_covid
    assert len(df) + sum(summary.skipped["ccd"].values()) + sum(summary.quarantined["ccd"].values()) == len(ccd)
    assert set(df.kind) <= {"xray", "ct_slice2d"} and (df.kind == "ct_slice2d").sum() == (ccd.modality == "ct").sum()


def test_covidct_adapter_on_real_ucsd_slices(rows, tmp_path):
    root = tmp_path / "COVID-CT"
    ucsd = _sample(rows[rows.source == "ucsd_covidct"], 5)
    for r in ucsd.itertuples():
        folder = "CT_COVID" if r.label == "covid" else "CT_NonCOVID"
        _link(REALDATA / r.path, root / folder / Path(r.source_path).name)
    spec = SourceSpec(name="covidct", adapter="covidct", location=str(root))
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    df = mf.read_manifest(summary.out_dir)
    assert len(df) == len(ucsd)
    assert (df.label == "covid19").sum() == (ucsd.label == "covid").sum()
    assert (df.kind == "ct_slice2d").all() and (df.modality == "ct").all()


def test_hospital_adapter_on_real_dicom_leaks_no_header_value(tmp_path, caplog):
    dicom_dir = REALDATA / "dicom"
    root = tmp_path / "export"
    _link(dicom_dir / "ct_series_lungdx_A0002", root / "dicom" / "series_a")
    _link(dicom_dir / "cxr_cr_rg1" / "RG1_UNCR.dcm", root / "dicom" / "cr.dcm")
    nysbu = sorted((dicom_dir / "ct_slices_nysbu").glob("*.dcm"))[:2]
    for i, f in enumerate(nysbu):
        _link(f, root / "dicom" / f"slice{i}.dcm")
    labels = [{"path": "dicom/series_a", "label": "normal", "modality": "ct"},
              {"path": "dicom/cr.dcm", "label": "normal", "modality": "xray"}]
    labels += [{"path": f"dicom/slice{i}.dcm", "label": "covid19", "modality": "ct"} for i in range(len(nysbu))]
    _write_csv(root / "labels.csv", labels)
    # the real identifying values, read from the headers, play the sentinels
    secrets: set[str] = set()
    for f in [*sorted((dicom_dir / "ct_series_lungdx_A0002").glob("*.dcm"))[:1], dicom_dir / "cxr_cr_rg1" / "RG1_UNCR.dcm", *nysbu]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber", "InstitutionName"):
            value = str(ds.get(kw, "") or "")
            if len(value) >= 4:
                secrets.add(value)
    assert secrets
    caplog.set_level("DEBUG")
    spec = SourceSpec(name="hosp", adapter="hospital", location=str(root), centre="centre_x")
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    df = mf.read_manifest(summary.out_dir)
    assert summary.n_records == 2 + len(nysbu)
    ct = df[df.n_slices == 30].iloc[0]
    vol = np.load(summary.out_dir / ct.array_path)
    reference = np.load(REALDATA / "npy" / "lungdx_A0002_ct_hu_zyx.npy")
    assert vol.dtype == np.int16 and vol.shape == reference.shape
    assert np.array_equal(vol, reference) or np.array_equal(vol, reference[::-1])
    cr = df[df.kind == "xray"].iloc[0]
    assert (cr.rows, cr.cols) == (1955, 1841) and cr.photometric == "MONOCHROME1"
    found = []
    for path in summary.out_dir.rglob("*"):
        if path.is_file() and path.suffix == ".parquet":
            text = " ".join(map(str, pd.read_parquet(path).to_numpy().ravel()))
            found += [(path.name, s) for s in secrets if s in text or s.encode() in path.read_bytes()]
    found += [("logs", s) for s in secrets if s in caplog.text]
    assert found == []
    assert hashlib.sha256((summary.out_dir / ct.array_path).read_bytes()).hexdigest() == ct.content_sha256
