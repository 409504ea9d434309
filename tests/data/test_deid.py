"""De-identification: salt handling, pseudonyms, the Basic Profile on real DICOM files."""

from __future__ import annotations

import os
import re
import stat

import pydicom
import pytest

from covidscan.config import DeidConfig
from covidscan.data.deid import (
    TECHNICAL_FIELDS,
    deidentify,
    init_salt,
    is_burned_in,
    load_salt,
    pseudonym,
    quiet_header_values,
    technical_meta,
)
from covidscan.errors import ConfigError
from tests.data.ingest_fixtures import (
    CURVE_SENTINEL,
    NESTED_SENTINEL,
    OVERLAY_SENTINEL,
    PRIVATE_SENTINEL,
    SENTINELS,
    UID_ROOT,
    write_xray,
)

SALT = b"unit-test-salt-0123456789abcdef"


def _all_values(ds: pydicom.Dataset) -> list[str]:
    out = []
    for elem in ds.iterall():
        if elem.VR != "SQ":
            out.append(str(elem.value))
    for elem in ds.file_meta:
        out.append(str(elem.value))
    return out


@pytest.fixture
def identified(tmp_path):
    path = write_xray(tmp_path / "x.dcm", patient_id="SNTLPID0001", study_uid=f"{UID_ROOT}.1", sentinels=True)
    return pydicom.dcmread(path)


def test_pseudonym_format_stable_and_salted():
    p = pseudonym("src\x1fPAT1", SALT, "patient")
    assert re.fullmatch(r"p-[0-9a-f]{16}", p)
    assert pseudonym("src\x1fPAT1", SALT, "patient") == p
    assert pseudonym("src\x1fPAT1", b"another-salt-0123456789", "patient") != p
    assert pseudonym("src\x1fPAT2", SALT, "patient") != p
    s = pseudonym("src\x1fPAT1", SALT, "study")
    assert re.fullmatch(r"s-[0-9a-f]{16}", s) and s[2:] != p[2:]
    with pytest.raises(ValueError):
        pseudonym("x", SALT, "name")  # type: ignore[arg-type]


def test_deidentify_removes_every_sentinel(identified):
    before = _all_values(identified)
    clean = deidentify(identified, SALT)
    values = " ".join(_all_values(clean))
    for keyword, sentinel in SENTINELS.items():
        assert sentinel not in values, keyword
    for sentinel in (PRIVATE_SENTINEL, OVERLAY_SENTINEL, CURVE_SENTINEL, NESTED_SENTINEL, "SNTLPID0001", UID_ROOT):
        assert sentinel not in values
    assert not any(elem.tag.is_private for elem in clean.iterall())
    assert not any(0x6000 <= elem.tag.group <= 0x60FF or 0x5000 <= elem.tag.group <= 0x50FF for elem in clean)
    assert clean.PatientIdentityRemoved == "YES"
    assert clean.SOPClassUID == identified.SOPClassUID  # technical UIDs are kept
    assert clean.Manufacturer == "TestVendor" and clean.Rows == identified.Rows
    assert _all_values(identified) == before  # the input is untouched


def test_uid_remapping_is_consistent(identified):
    a, b = deidentify(identified, SALT), deidentify(identified, SALT)
    assert a.StudyInstanceUID == b.StudyInstanceUID != identified.StudyInstanceUID
    assert a.StudyInstanceUID.startswith("2.25.")
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    other = deidentify(identified, b"another-salt-0123456789")
    assert other.StudyInstanceUID != a.StudyInstanceUID


def test_technical_meta_is_a_whitelist(identified):
    meta = technical_meta(identified)
    assert set(meta) <= set(TECHNICAL_FIELDS)
    assert meta["Modality"] == "CR" and meta["Manufacturer"] == "TestVendor"
    assert meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    text = repr(meta)
    assert not any(s in text for s in SENTINELS.values())


@pytest.mark.parametrize(("value", "expected"), [("YES", True), ("yes ", True), ("NO", False), (None, False)])
def test_is_burned_in(tmp_path, value, expected):
    ds = pydicom.dcmread(write_xray(tmp_path / "b.dcm", patient_id="P", study_uid=f"{UID_ROOT}.2", burned_in=value))
    with quiet_header_values():  # 'yes ' is not a valid CS value; read it anyway
        assert is_burned_in(ds) is expected


def test_load_salt_from_env(monkeypatch):
    monkeypatch.setenv("COVIDSCAN_TEST_SALT", "s" * 32)
    assert load_salt(DeidConfig(salt_env="COVIDSCAN_TEST_SALT", salt_file="/nonexistent/salt")) == b"s" * 32


def test_load_salt_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("COVIDSCAN_TEST_SALT", raising=False)
    with pytest.raises(ConfigError, match="COVIDSCAN_TEST_SALT") as err:
        load_salt(DeidConfig(salt_env="COVIDSCAN_TEST_SALT", salt_file=str(tmp_path / "nope")))
    assert "salt init" in str(err.value)


def test_init_salt_creates_private_file_and_load_reads_it(monkeypatch, tmp_path):
    monkeypatch.delenv("COVIDSCAN_TEST_SALT", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = DeidConfig(salt_env="COVIDSCAN_TEST_SALT", salt_file=str(tmp_path.parent / f"{tmp_path.name}-home" / "salt"))
    path = init_salt(cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    salt = load_salt(cfg)
    assert len(salt) == 64
    with pytest.raises(ConfigError, match="already exists"):
        init_salt(cfg)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_salt(cfg)


def test_salt_file_inside_a_repository_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("COVIDSCAN_TEST_SALT", raising=False)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    cfg = DeidConfig(salt_env="COVIDSCAN_TEST_SALT", salt_file=str(repo / "secrets" / "salt"))
    with pytest.raises(ConfigError, match="repository"):
        init_salt(cfg)
    cfg_ml = DeidConfig(salt_env="COVIDSCAN_TEST_SALT", salt_file=str(tmp_path / "mlruns" / "salt"))
    with pytest.raises(ConfigError, match="MLflow"):
        init_salt(cfg_ml)


def test_short_salt_is_refused(monkeypatch):
    monkeypatch.setenv("COVIDSCAN_TEST_SALT", "short")
    with pytest.raises(ConfigError, match="at least"):
        load_salt(DeidConfig(salt_env="COVIDSCAN_TEST_SALT"))
