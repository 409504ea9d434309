"""Untrusted uploads without a server: type sniffing, zip safety, .npy checks, DICOM errors as 4xx."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from covidscan.config import DicomLimits, ServeConfig
from covidscan.serving.uploads import UploadError, extract_zip, read_ct, read_image_2d, sniff
from tests.data import dicom_factory as fx

SERVE = ServeConfig(max_files=10, max_unzipped_mb=1.0, decode_isolated=False)


def _zip(path, entries, method=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("content", "kind"),
    [(b"\0" * 128 + b"DICM" + b"\0" * 10, "dicom"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "png"), (b"\xff\xd8\xff\xe0" + b"\0" * 10, "jpeg"),
     (b"PK\x03\x04" + b"\0" * 10, "zip"), (b"\x93NUMPY" + b"\0" * 10, "npy"), (b"hello world", None)],  # fmt: skip
)
def test_sniff_by_content(tmp_path, content, kind):
    path = tmp_path / "upload.png"  # the name never matters
    path.write_bytes(content)
    assert sniff(path) == kind


@pytest.mark.parametrize(
    ("entries", "code", "status"),
    [({"../x.dcm": b"a"}, "zip_path_traversal", 422), ({"/abs.dcm": b"a"}, "zip_path_traversal", 422),
     ({f"{i}.dcm": b"a" for i in range(11)}, "too_many_files", 413), ({"a.dcm": b"\0" * (2 * 1024 * 1024)}, "zip_bomb", 413), ({}, "empty_zip", 422)],  # fmt: skip
)
def test_zip_refusals(tmp_path, entries, code, status):
    path = _zip(tmp_path / "u.zip", entries)
    (tmp_path / "out").mkdir()
    with pytest.raises(UploadError) as info:
        extract_zip(path, tmp_path / "out", SERVE)
    assert (info.value.code, info.value.status) == (code, status)
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_extracts_flat_under_generated_names(tmp_path):
    path = _zip(tmp_path / "u.zip", {"a/b/c.dcm": b"x", "d.dcm": b"yy"})
    (tmp_path / "out").mkdir()
    files = extract_zip(path, tmp_path / "out", SERVE)
    assert [f.name for f in files] == ["00000.dcm", "00001.dcm"] and files[1].read_bytes() == b"yy"


def test_npy_object_dtype_is_refused_without_unpickling(tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    (tmp_path / "v.npy").write_bytes(buf.getvalue())
    with pytest.raises(UploadError) as info:
        read_ct([tmp_path / "v.npy"], tmp_path / "w", DicomLimits(), SERVE)
    assert info.value.status == 415


def test_npy_volume_and_series_give_the_same_hu(tmp_path):
    vol = fx.volume(5, 16, 12)
    series = tmp_path / "s"
    series.mkdir()
    files = fx.write_series(series, vol, spacing_z=2.0)
    np.save(tmp_path / "v.npy", vol.astype(np.int16))
    a = read_ct(files, tmp_path / "w1", DicomLimits(), SERVE)
    b = read_ct([tmp_path / "v.npy"], tmp_path / "w2", DicomLimits(), SERVE, spacing_mm=2.0)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.spacing_z == pytest.approx(2.0) and b.spacing_z == 2.0


def test_dicom_error_is_4xx_without_the_temporary_path(tmp_path):
    ds = fx.xray()
    ds.BitsStored = 20
    path = tmp_path / "secret-location.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    with pytest.raises(UploadError) as info:
        read_image_2d(path, DicomLimits(), SERVE, modalities=frozenset({"CR", "DX"}))
    assert info.value.status == 422 and "BitsStored 20" in str(info.value)
    assert str(tmp_path) not in str(info.value) and str(info.value).startswith("upload")
