"""Each source adapter on a small fixture in its own layout (images written with OpenCV, a MetaImage
volume with SimpleITK, DICOM with pydicom, small CSVs), then through ingest."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from covidscan.config import DataConfig, SourceSpec
from covidscan.data import manifest as mf
from covidscan.data.ingest import ingest
from covidscan.data.sources import ADAPTERS, get_adapter
from covidscan.data.sources.covidct import patient_group
from covidscan.data.sources.labels import map_label
from covidscan.errors import ConfigError, DataError
from tests.data.ingest_fixtures import UID_ROOT, write_xray

SALT = b"sources-test-salt-0123456789abcdef"


def _png(path: Path, shape=(20, 24), channels: int = 1, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((*shape, channels) if channels > 1 else shape, value, dtype=np.uint8)
    img[: shape[0] // 2] = 200
    assert cv2.imwrite(str(path), img)
    return path


def _csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _records(adapter: str, root: Path, **options):
    spec = SourceSpec(name=f"t_{adapter}", adapter=adapter, location=str(root), options=options)
    a = get_adapter(adapter)(spec)
    return a, a.records()


def _ingest(adapter: str, root: Path, tmp_path: Path, **options):
    spec = SourceSpec(name=f"t_{adapter}", adapter=adapter, location=str(root), options=options)
    summary = ingest([spec], DataConfig(), tmp_path / "out", salt=SALT, progress=False)
    return summary, mf.read_manifest(summary.out_dir)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("COVID-19", "covid19"), ("Pneumonia/Viral/COVID-19", "covid19"), ("COVID-19, ARDS", "covid19"),
        ("Pneumonia/Viral/Influenza", "influenza"), ("Influenza", "influenza"), ("No Finding", "normal"),
        ("Normal", "normal"), ("Klebsiella", "pneumonia"), ("Pneumonia/Bacterial/Streptococcus", "pneumonia"),
        ("SARS", "pneumonia"), ("Viral Pneumonia", "pneumonia"), ("ARDS", "pneumonia"), ("todo", None),
        ("Tuberculosis", None), ("non_covid", None), ("CT_COVID", "covid19"),
    ],
)
def test_map_label(text, expected):
    assert map_label(text) == expected


def test_label_map_option_wins():
    assert map_label("Tuberculosis", {"tuberculosis": "pneumonia"}) == "pneumonia"


def test_registry_knows_every_adapter():
    assert {get_adapter(n).name for n in ADAPTERS} == set(ADAPTERS)
    with pytest.raises(ConfigError, match="unknown source adapter"):
        get_adapter("nope")


def test_unknown_option_is_a_config_error(tmp_path):
    (tmp_path / "COVID").mkdir()
    spec = SourceSpec(name="x", adapter="imagefolder", location=str(tmp_path), options={"modalty": "ct"})
    with pytest.raises(ConfigError, match=r"options: unknown key 'modalty'"):
        get_adapter("imagefolder")(spec)


def test_missing_location_is_a_data_error(tmp_path):
    spec = SourceSpec(name="x", adapter="ccd", location=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="not found"):
        get_adapter("ccd")(spec)


def test_ccd(tmp_path):
    root = tmp_path / "ccd"
    _png(root / "images" / "a.png", channels=3)
    _png(root / "images" / "b.jpg")
    _png(root / "images" / "c.png", channels=4)
    _png(root / "images" / "d.png")
    _png(root / "images" / "ct1.png")
    _png(root / "images" / "lat.png")
    rows = [
        {"patientid": "1", "offset": "0", "finding": "Pneumonia/Viral/COVID-19", "RT_PCR_positive": "Y", "view": "PA", "modality": "X-ray", "folder": "images", "filename": "a.png"},
        {"patientid": "1", "offset": "3", "finding": "COVID-19", "RT_PCR_positive": "Y", "view": "AP Supine", "modality": "X-ray", "folder": "images", "filename": "b.jpg"},
        {"patientid": "2", "offset": "", "finding": "No Finding", "RT_PCR_positive": "", "view": "PA", "modality": "X-ray", "folder": "images", "filename": "c.png"},
        {"patientid": "3", "offset": "", "finding": "Pneumonia/Bacterial/Klebsiella", "RT_PCR_positive": "N", "view": "AP", "modality": "X-ray", "folder": "images", "filename": "d.png"},
        {"patientid": "4", "offset": "", "finding": "COVID-19", "RT_PCR_positive": "", "view": "Axial", "modality": "CT", "folder": "images", "filename": "ct1.png"},
        {"patientid": "5", "offset": "", "finding": "COVID-19", "RT_PCR_positive": "", "view": "L", "modality": "X-ray", "folder": "images", "filename": "lat.png"},
        {"patientid": "6", "offset": "", "finding": "todo", "RT_PCR_positive": "", "view": "PA", "modality": "X-ray", "folder": "images", "filename": "d.png"},
        {"patientid": "7", "offset": "", "finding": "COVID-19", "RT_PCR_positive": "", "view": "Axial", "modality": "CT", "folder": "volumes", "filename": "v.nii.gz"},
    ]
    _csv(root / "metadata.csv", rows)
    adapter, recs = _records("ccd", root)
    assert [r.label for r in recs] == ["covid19", "covid19", "normal", "pneumonia", "covid19"]
    assert [r.kind for r in recs] == ["xray"] * 4 + ["ct_slice2d"]
    assert adapter.skipped == {"view": 1, "unsupported_file": 1}
    assert [(r.reason, r.row) for r in adapter.rejected] == [("unknown label 'todo'", 8)]  # metadata.csv line 8
    assert recs[0].rtpcr_initial == "positive" and recs[3].rtpcr_initial == "negative"
    summary, df = _ingest("ccd", root, tmp_path)
    assert summary.quarantined == {"t_ccd": {"unknown label 'todo'": 1}}
    assert len(df) == 5 and df[df.label == "covid19"].patient_id.nunique() == 2  # patients 1 and 4
    assert (df.origin == "public").all() and set(df.transfer_syntax) == {"image/png", "image/jpeg"}
    img = np.load(summary.out_dir / df.array_path.iloc[0])
    assert img.dtype == np.float32 and img.ndim == 2 and img.max() == 200


def test_covidct(tmp_path):
    root = tmp_path / "COVID-CT"
    for name in ("2020.02.10.20021584-p6-52%0.png", "2020.02.10.20021584-p6-52%1.png", "other-paper-p3-89_0.png"):
        _png(root / "CT_COVID" / name, channels=4)
    for name in ("0.jpg", "1%0.jpg", "1%1.png"):
        _png(root / "CT_NonCOVID" / name, channels=3)
    split = root / "Data-split"
    (split / "COVID").mkdir(parents=True)
    (split / "NonCOVID").mkdir(parents=True)
    (split / "COVID" / "trainCT_COVID.txt").write_text("2020.02.10.20021584-p6-52%0.png\nother-paper-p3-89_0.png\n")
    (split / "NonCOVID" / "trainCT_NonCOVID.txt").write_text("0.jpg\n")
    adapter, recs = _records("covidct", root)
    assert [r.label for r in recs] == ["covid19"] * 3 + ["normal"] * 3
    assert {r.kind for r in recs} == {"ct_slice2d"} and {r.modality for r in recs} == {"ct"}
    assert len({r.patient_key for r in recs}) == 4
    _, sub = _records("covidct", root, splits=["train"], non_covid_label="pneumonia")
    assert len(sub) == 3 and [r.label for r in sub].count("pneumonia") == 1
    _, df = _ingest("covidct", root, tmp_path)
    assert len(df) == 6 and df.patient_id.nunique() == 4 and (df.kind == "ct_slice2d").all()


@pytest.mark.parametrize(("stem", "group"), [("2020.02.10.20021584-p6-52%0", "2020.02.10.20021584"), ("12%3", "12"),
                                             ("paper-p3-89_1", "paper"), ("7", "7")])
def test_covidct_patient_groups(stem, group):
    assert patient_group(stem) == group


def test_rsna(tmp_path):
    root = tmp_path / "rsna"
    images = root / "stage_2_train_images"
    for i, pid in enumerate(["aaa", "bbb", "ccc", "ddd"]):
        write_xray(images / f"{pid}.dcm", patient_id=pid, study_uid=f"{UID_ROOT}.{10 + i}", modality="DX",
                   photometric="MONOCHROME1" if pid == "aaa" else "MONOCHROME2")
    _csv(root / "stage_2_train_labels.csv", [
        {"patientId": "aaa", "x": "1", "y": "1", "width": "5", "height": "5", "Target": "1"},
        {"patientId": "aaa", "x": "8", "y": "8", "width": "5", "height": "5", "Target": "1"},
        {"patientId": "bbb", "x": "", "y": "", "width": "", "height": "", "Target": "0"},
        {"patientId": "ccc", "x": "", "y": "", "width": "", "height": "", "Target": "0"},
        {"patientId": "eee", "x": "", "y": "", "width": "", "height": "", "Target": "0"},
    ])
    _csv(root / "stage_2_detailed_class_info.csv", [
        {"patientId": "aaa", "class": "Lung Opacity"}, {"patientId": "bbb", "class": "Normal"},
        {"patientId": "ccc", "class": "No Lung Opacity / Not Normal"}, {"patientId": "eee", "class": "Normal"},
    ])
    adapter, recs = _records("rsna", root)
    assert [(r.key, r.label) for r in recs] == [("aaa", "pneumonia"), ("bbb", "normal")]
    assert adapter.skipped == {"not_normal_no_opacity": 1}
    assert [r.reason for r in adapter.rejected] == ["missing_file"]  # eee
    summary, df = _ingest("rsna", root, tmp_path)
    assert sorted(df.label) == ["normal", "pneumonia"] and df.patient_id.nunique() == 2
    assert set(df.photometric) == {"MONOCHROME1", "MONOCHROME2"}
    assert (df.kind == "xray").all() and df.spacing_row.iloc[0] == pytest.approx(0.2)


def test_luna16(tmp_path):
    root = tmp_path / "luna"
    (root / "subset0").mkdir(parents=True)
    vol = (np.arange(4 * 8 * 6, dtype=np.int16).reshape(4, 8, 6) - 1000)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.6, 0.7, 2.5))  # (x, y, z)
    sitk.WriteImage(image, str(root / "subset0" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.100.mhd"))
    image2 = sitk.GetImageFromArray(vol[::-1].copy())
    image2.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))
    image2.SetSpacing((0.6, 0.7, 2.5))
    sitk.WriteImage(image2, str(root / "subset0" / "1.3.6.1.4.1.14519.5.2.1.6279.6001.200.mhd"))
    _csv(root / "annotations.csv", [{"seriesuid": "1.3.6.1.4.1.14519.5.2.1.6279.6001.200", "coordX": "1", "coordY": "1",
                                     "coordZ": "1", "diameter_mm": "5"}])
    adapter, recs = _records("luna16", root)
    assert len(recs) == 2 and {r.label for r in recs} == {"normal"} and {r.kind for r in recs} == {"ct_volume"}
    loaded = recs[0].load()
    assert loaded.array.dtype == np.int16 and loaded.array.shape == (4, 8, 6)
    np.testing.assert_array_equal(loaded.array, vol)
    assert loaded.spacing == pytest.approx((2.5, 0.7, 0.6))
    np.testing.assert_array_equal(recs[1].load().array, vol)  # z flipped into ascending order
    _, only = _records("luna16", root, exclude_nodules=True)
    assert len(only) == 1
    summary, df = _ingest("luna16", root, tmp_path)
    assert df.n_slices.tolist() == [4, 4] and df.spacing_slice.tolist() == pytest.approx([2.5, 2.5])
    assert df.content_sha256.nunique() == 1 and df.array_path.nunique() == 1  # identical arrays share a file


def test_imagefolder(tmp_path):
    root = tmp_path / "icnp"
    _png(root / "COVID" / "12_a.png")
    _png(root / "COVID" / "12_b.png")
    _png(root / "Normal" / "13_a.jpg", channels=3)
    _png(root / "Viral Pneumonia" / "14_a.png")
    _png(root / "Lung_Opacity" / "15.png")
    _png(root / "Misc" / "16.png")
    adapter, recs = _records("imagefolder", root, patient_regex=r"^(\d+)_")
    assert sorted(r.label for r in recs) == ["covid19", "covid19", "normal", "pneumonia"]
    # Lung_Opacity maps to pneumonia, but "15.png" has no patient number; "Misc" maps to no class
    assert [r.reason for r in adapter.rejected] == ["unknown label 'Misc'"] and adapter.skipped["patient_regex_no_match"] == 1
    assert len({r.patient_key for r in recs}) == 3
    _, ct = _records("imagefolder", root, modality="ct")
    assert {r.kind for r in ct} == {"ct_slice2d"}
    with pytest.raises(ConfigError, match="modality"):
        _records("imagefolder", root, modality="mri")
    _, df = _ingest("imagefolder", root, tmp_path, patient_regex=r"^(\d+)_")
    assert df.patient_id.nunique() == 3 and len(df) == 4


def test_csv_adapter_label_mapping(tmp_path):
    root = tmp_path / "csvsrc"
    for name in ("a.png", "b.png", "c.png", "d.png", "e.png", "f.png"):
        _png(root / "img" / name)
    write_xray(root / "dcm" / "x.dcm", patient_id="P9", study_uid=f"{UID_ROOT}.30")
    rows = [
        {"path": "img/a.png", "label": "covid", "patient_id": "s:1", "group_id": "s:1", "modality": "cxr", "source": "ccd", "finding": "COVID-19", "origin": "https://example.org"},
        {"path": "img/b.png", "label": "non_covid", "patient_id": "s:2", "group_id": "s:1", "modality": "cxr", "source": "ccd", "finding": "Klebsiella", "origin": ""},
        {"path": "img/c.png", "label": "non_covid", "patient_id": "s:3", "group_id": "", "modality": "cxr", "source": "ccd", "finding": "No Finding", "origin": ""},
        {"path": "img/d.png", "label": "non_covid", "patient_id": "u:4", "group_id": "", "modality": "ct", "source": "ucsd", "finding": "non-COVID (crawled)", "origin": ""},
        {"path": "img/e.png", "label": "covid", "patient_id": "u:5", "group_id": "", "modality": "ct", "source": "ucsd", "finding": "COVID-19", "origin": ""},
        {"path": "img/f.png", "label": "non_covid", "patient_id": "s:6", "group_id": "", "modality": "cxr", "source": "ccd", "finding": "Influenza", "origin": ""},
        {"path": "dcm/x.dcm", "label": "normal", "patient_id": "d:9", "group_id": "", "modality": "xray", "source": "", "finding": "", "origin": "hospital"},
        {"path": "img/missing.png", "label": "covid", "patient_id": "s:7", "group_id": "", "modality": "cxr", "source": "ccd", "finding": "", "origin": ""},
    ]
    _csv(root / "manifest.csv", rows)
    adapter, recs = _records("csv", root)
    assert [r.label for r in recs] == ["covid19", "pneumonia", "normal", "normal", "covid19", "influenza", "normal"]
    assert [r.kind for r in recs] == ["xray", "xray", "xray", "ct_slice2d", "ct_slice2d", "xray", "xray"]
    assert [(r.reason, r.row) for r in adapter.rejected] == [("missing_file", 9)] and not adapter.skipped
    assert adapter.defaulted == {"non_covid_label=normal": 1}  # d.png: "non-COVID (crawled)"
    assert recs[0].patient_key == recs[1].patient_key  # linked by group_id
    _, alt = _records("csv", root, non_covid_label="pneumonia", label_map={"No Finding": "normal"})
    assert [r.label for r in alt][2:4] == ["normal", "pneumonia"]
    summary, df = _ingest("csv", root, tmp_path)
    assert len(df) == 7 and set(df.source) == {"ccd", "ucsd", "t_csv"}
    assert df[df.source == "t_csv"].origin.iloc[0] == "hospital" and (df[df.source == "ccd"].origin == "public").all()
    assert df.patient_id.nunique() == 6


def test_csv_adapter_rejects_escaping_paths(tmp_path):
    root = tmp_path / "c"
    _csv(root / "manifest.csv", [{"path": "../x.png", "label": "covid", "patient_id": "1", "modality": "cxr"}])
    with pytest.raises(DataError, match="row 2"):
        _records("csv", root)


def _noise_image(path: Path, suffix_bytes: bytes | None = None) -> bytes:
    """A real 64x64 grey noise image encoded by OpenCV (PNG or JPEG by the suffix); returns its bytes."""
    rng = np.random.default_rng(7)
    ok, buf = cv2.imencode(path.suffix, rng.integers(0, 256, (64, 64), dtype=np.uint8))
    assert ok
    data = buf.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _bad_csv_source(root: Path) -> list[dict]:
    """A CSV manifest: four good images, then one bad row of each kind (rows 6-12 of the CSV)."""
    for name in ("g1.png", "g2.png", "g3.png", "f_tb.png", "f_todo.png"):
        _png(root / "img" / name)
    _noise_image(root / "img" / "g4.jpg")
    (root / "img" / "f_empty.png").write_bytes(b"")
    png = _noise_image(root / "img" / "f_cut.png")
    (root / "img" / "f_cut.png").write_bytes(png[: len(png) // 2])
    jpg = _noise_image(root / "img" / "f_cut.jpg")
    (root / "img" / "f_cut.jpg").write_bytes(jpg[: len(jpg) - 40])  # cut 40 bytes before its end
    (root / "img" / "f_garbage.png").write_bytes(b"<html><body>404 Not Found</body></html>\n" * 4)
    row = {"label": "covid", "group_id": "", "modality": "cxr", "source": "ccd", "finding": ""}
    rows = [
        {**row, "path": "img/g1.png", "patient_id": "s:1"},
        {**row, "path": "img/g2.png", "patient_id": "s:2", "label": "non_covid", "finding": "No Finding"},
        {**row, "path": "img/g3.png", "patient_id": "u:3", "label": "non_covid", "finding": "non-COVID (crawled)",
         "modality": "ct", "source": "ucsd"},
        {**row, "path": "img/g4.jpg", "patient_id": "s:4", "label": "non_covid", "finding": "Klebsiella"},
        {**row, "path": "img/f_missing.png", "patient_id": "s:5"},                       # row 6
        {**row, "path": "img/f_empty.png", "patient_id": "s:6"},                         # row 7
        {**row, "path": "img/f_cut.png", "patient_id": "s:7"},                           # row 8
        {**row, "path": "img/f_cut.jpg", "patient_id": "s:8"},                           # row 9
        {**row, "path": "img/f_garbage.png", "patient_id": "s:9"},                       # row 10
        {**row, "path": "img/f_tb.png", "patient_id": "s:10", "label": "Tuberculosis"},  # row 11
        {**row, "path": "img/f_todo.png", "patient_id": "s:11", "label": "todo"},        # row 12
    ]
    _csv(root / "manifest.csv", rows)
    return rows


EXPECTED_BAD = {6: "missing_file", 7: "empty_file", 8: "truncated", 9: "truncated", 10: "not_an_image",
                11: "unknown label 'Tuberculosis'", 12: "unknown label 'todo'"}


def test_csv_bad_rows_are_quarantined_with_their_reason(tmp_path, caplog):
    import json
    import logging

    from covidscan.data.ingest import REPORT_FILE

    root = tmp_path / "csvsrc"
    rows = _bad_csv_source(root)
    caplog.set_level(logging.DEBUG)
    summary, df = _ingest("csv", root, tmp_path)  # no exception escapes
    # the good rows are ingested as before
    assert len(df) == 4 and sorted(df.label) == ["covid19", "normal", "normal", "pneumonia"]
    assert sorted(df.rows) == [20, 20, 20, 64]
    # each bad row is in the quarantine table with its reason and its CSV line, under pseudonyms only
    q = mf.read_table(summary.out_dir / mf.QUARANTINE_FILE, mf.QUARANTINE_SCHEMA)
    assert dict(zip(q.row, q.reason)) == EXPECTED_BAD and len(q) == len(EXPECTED_BAD)
    assert q.record_id.str.fullmatch(r"r-[0-9a-f]{16}").all() and q.patient_id.str.fullmatch(r"p-[0-9a-f]{16}").all()
    assert set(q.source) == {"ccd"} and set(q.record_id).isdisjoint(df.record_id)
    # the run summary counts them per reason; the unmapped non_covid finding took the documented default
    assert summary.quarantined == {"t_csv": {"truncated": 2, "missing_file": 1, "empty_file": 1, "not_an_image": 1,
                                             "unknown label 'Tuberculosis'": 1, "unknown label 'todo'": 1}}
    assert summary.defaulted == {"t_csv": {"non_covid_label=normal": 1}}
    assert summary.ingested == {"t_csv": 4} and summary.n_quarantined == 7 and summary.skipped == {"t_csv": {}}
    report = json.loads((summary.out_dir / REPORT_FILE).read_text())
    assert report == json.loads(json.dumps(summary.report()))
    assert report["sources"]["t_csv"]["quarantined"]["truncated"] == 2
    assert "7 quarantined" in caplog.text and "non_covid_label=normal" in caplog.text
    # nothing names a file or a patient: not the tables, not the report, not the logs
    text = caplog.text + (summary.out_dir / REPORT_FILE).read_text() + q.to_string()
    for r in rows:
        assert r["path"] not in text and Path(r["path"]).stem not in text and r["patient_id"] not in text


@pytest.mark.parametrize(("name", "error"), [("f_empty.png", "EmptyImageError"), ("f_cut.png", "TruncatedImageError"),
                                             ("f_cut.jpg", "TruncatedImageError"), ("f_garbage.png", "NotAnImageError")])
def test_read_grey_says_why_a_file_is_unusable(tmp_path, name, error):
    from covidscan.data.sources import image_files

    _bad_csv_source(tmp_path)
    with pytest.raises(image_files.ImageFileError) as info:
        image_files.read_grey(tmp_path / "img" / name, 10**6)
    assert type(info.value).__name__ == error and isinstance(info.value, DataError)
    assert image_files.read_grey(tmp_path / "img" / "g4.jpg", 10**6).shape == (64, 64)


def test_unknown_label_reason_is_clean_and_short():
    from covidscan.data.sources.labels import UNKNOWN_LABEL_MAX_CHARS, unknown_label_reason

    assert unknown_label_reason(" Tuberculosis\n") == "unknown label 'Tuberculosis'"
    assert unknown_label_reason("it's\x00odd") == "unknown label 'its odd'"
    long = unknown_label_reason("x" * 500)
    assert long.endswith("...'") and len(long) == len("unknown label ''") + UNKNOWN_LABEL_MAX_CHARS


def test_source_without_usable_records_fails_typed_and_leaves_earlier_output_intact(tmp_path):
    from covidscan.data.ingest import NoUsableRecordsError

    good = tmp_path / "good"
    _png(good / "a.png")
    _png(good / "b.png", value=30)
    _csv(good / "manifest.csv", [{"path": "a.png", "label": "covid", "patient_id": "1", "modality": "cxr"},
                                 {"path": "b.png", "label": "normal", "patient_id": "2", "modality": "cxr"}])
    bad = tmp_path / "bad"
    _bad_csv_source(bad)
    _csv(bad / "manifest.csv", [r for r in _bad_csv_source(bad) if r["path"] not in ("img/g1.png", "img/g2.png",
                                                                                      "img/g3.png", "img/g4.jpg")])
    out = tmp_path / "out"
    specs = [SourceSpec(name="good", adapter="csv", location=str(good)),
             SourceSpec(name="badsrc", adapter="csv", location=str(bad))]
    ingest(specs[:1], DataConfig(), out, salt=SALT, progress=False)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {"manifest.parquet", "quarantine.parquet", "report.json"} <= set(before)
    with pytest.raises(NoUsableRecordsError) as info:
        ingest(specs, DataConfig(), out, salt=SALT, progress=False)
    msg = str(info.value)
    assert isinstance(info.value, DataError) and "data.sources[badsrc]" in msg and "no usable record among 7 rows" in msg
    assert "2 truncated" in msg and "1 missing_file" in msg and "1 empty_file" in msg and "1 not_an_image" in msg
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the earlier run's tables, report and arrays are untouched
    assert len(mf.read_manifest(out)) == 2


def test_csv_bad_dicom_rows_are_quarantined_with_their_reason(tmp_path):
    root = tmp_path / "dcmsrc"
    write_xray(root / "d" / "good.dcm", patient_id="P1", study_uid=f"{UID_ROOT}.41")
    data = write_xray(root / "d" / "f_cut.dcm", patient_id="P2", study_uid=f"{UID_ROOT}.42").read_bytes()
    (root / "d" / "f_cut.dcm").write_bytes(data[: len(data) - 100])  # ends inside the pixel data
    (root / "d" / "f_empty.dcm").write_bytes(b"")
    (root / "d" / "f_text.dcm").write_text("patient list\n" * 20)
    _csv(root / "manifest.csv", [{"path": f"d/{n}.dcm", "label": "covid", "patient_id": str(i), "modality": "xray"}
                                 for i, n in enumerate(("good", "f_cut", "f_empty", "f_text"))])
    summary, df = _ingest("csv", root, tmp_path)
    assert len(df) == 1 and df.transfer_syntax.iloc[0].startswith("1.2.840")
    q = mf.read_table(summary.out_dir / mf.QUARANTINE_FILE, mf.QUARANTINE_SCHEMA)
    assert dict(zip(q.row, q.reason)) == {3: "truncated", 4: "empty_file", 5: "not_dicom"}
