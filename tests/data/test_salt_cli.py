"""`covidscan salt-init`: creates the salt file with mode 0600, refuses to overwrite or to write in a repo."""

from __future__ import annotations

import stat

import yaml
from typer.testing import CliRunner

from covidscan.cli import app


def test_salt_init_command(tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    salt = tmp_path / "secrets" / "salt"
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"deid": {"salt_file": str(salt)}}}))
    runner = CliRunner()
    first = runner.invoke(app, ["salt-init"])
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_text().strip()) == 64
    again = runner.invoke(app, ["salt-init"])
    assert again.exit_code != 0 and "already exists" in again.output
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"deid": {"salt_file": str(work / "salt")}}}))
    inside = runner.invoke(app, ["salt-init"])
    assert inside.exit_code != 0 and "working directory" in inside.output
    assert not (work / "salt").exists()
