"""The `ingest` DVC stage entry point, run as DVC runs it (a subprocess), on a tiny hospital export."""

from __future__ import annotations

import os
import subprocess
import sys

from covidscan.data import manifest as mf

from tests.conftest import ROOT, write_stage_params
from tests.data.ingest_fixtures import UID_ROOT, write_hospital_export


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1", **extra}
    return env


def test_stage_writes_the_ingest_folder(tmp_path):
    export = write_hospital_export(tmp_path / "export", [
        {"rel": "dicom/a.dcm", "modality": "xray", "label": "covid19", "patient_id": "P1", "study_uid": f"{UID_ROOT}.1"},
        {"rel": "dicom/ct1", "modality": "ct", "label": "normal", "patient_id": "P2", "study_uid": f"{UID_ROOT}.2"},
    ])
    params = write_stage_params(tmp_path, "ingest", {"data": {
        "sources": [{"name": "hosp", "adapter": "hospital", "location": str(export), "centre": "centre_a"}],
        "deid": {"salt_env": "COVIDSCAN_STAGE_TEST_SALT"},
    }})
    out = tmp_path / "ingest"
    proc = subprocess.run([sys.executable, "-m", "pipelines.ingest", "--params", str(params), "--out", str(out), "--no-progress"],
                          cwd=ROOT, env=_env(COVIDSCAN_STAGE_TEST_SALT="stage-test-salt-0123456789"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    df = mf.read_manifest(out)
    assert sorted(df.kind) == ["ct_volume", "xray"] and set(df.centre) == {"centre_a"}
    assert "2 records, 0 quarantined" in proc.stdout
    assert "P1" not in proc.stdout + proc.stderr


def test_stage_without_salt_fails_with_one_clear_line(tmp_path):
    params = write_stage_params(tmp_path, "ingest", {"data": {
        "sources": [{"name": "hosp", "adapter": "hospital", "location": str(tmp_path)}],
        "deid": {"salt_env": "COVIDSCAN_STAGE_NO_SALT", "salt_file": str(tmp_path / "nosalt")},
    }})
    env = _env()
    env.pop("COVIDSCAN_STAGE_NO_SALT", None)
    proc = subprocess.run([sys.executable, "-m", "pipelines.ingest", "--params", str(params), "--out", str(tmp_path / "o")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "COVIDSCAN_STAGE_NO_SALT" in proc.stderr and "Traceback" not in proc.stderr


def test_stage_reports_quarantined_rows_and_fails_in_one_line_on_a_source_with_none_usable(tmp_path):
    import json

    import pandas as pd

    export = write_hospital_export(tmp_path / "export", [
        {"rel": "dicom/a.dcm", "modality": "xray", "label": "covid19", "patient_id": "P1", "study_uid": f"{UID_ROOT}.1"},
    ])
    labels = pd.read_csv(export / "labels.csv", dtype=str, keep_default_na=False)
    labels.loc[len(labels)] = {**labels.iloc[0].to_dict(), "path": "dicom/gone.dcm"}
    labels.loc[len(labels)] = {**labels.iloc[0].to_dict(), "path": "dicom/tb.dcm", "label": "Tuberculosis"}
    labels.to_csv(export / "labels.csv", index=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.csv").write_text("path,label,patient_id,modality\nx/gone.png,covid,1,cxr\nx/none.png,covid,2,cxr\n")
    env = _env(COVIDSCAN_STAGE_TEST_SALT="stage-test-salt-0123456789")
    good_src = {"name": "hosp", "adapter": "hospital", "location": str(export)}
    params = write_stage_params(tmp_path, "ingest", {"data": {"sources": [good_src], "deid": {"salt_env": "COVIDSCAN_STAGE_TEST_SALT"}}})
    out = tmp_path / "ingest"
    cmd = [sys.executable, "-m", "pipelines.ingest", "--params", str(params), "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 records, 2 quarantined" in proc.stdout
    assert "hosp: quarantined 1 missing_file, 1 unknown label 'Tuberculosis'" in proc.stdout
    assert json.loads((out / "report.json").read_text())["sources"]["hosp"]["quarantined"] == {
        "missing_file": 1, "unknown label 'Tuberculosis'": 1}
    manifest_before = (out / "manifest.parquet").read_bytes()
    params = write_stage_params(tmp_path, "ingest", {"data": {
        "sources": [good_src, {"name": "badsrc", "adapter": "csv", "location": str(bad)}],
        "deid": {"salt_env": "COVIDSCAN_STAGE_TEST_SALT"}}})
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "data.sources[badsrc]" in proc.stderr and "2 missing_file" in proc.stderr
    assert (out / "manifest.parquet").read_bytes() == manifest_before
