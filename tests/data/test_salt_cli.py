"""`covidscan salt init`: creates the salt file with mode 0600, is idempotent, refuses a repo location."""

from __future__ import annotations

import stat

import yaml
from typer.testing import CliRunner

from covidscan.cli import app


def test_salt_init_command(tmp_path, monkeypatch):
    monkeypatch.delenv("COVIDSCAN_CLI_TEST_SALT", raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    salt = tmp_path / "secrets" / "salt"
    deid = {"salt_env": "COVIDSCAN_CLI_TEST_SALT", "salt_file": str(salt)}
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"deid": deid}}))
    runner = CliRunner()
    first = runner.invoke(app, ["salt", "init"])
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_text().strip()) == 64
    content = salt.read_text()
    again = runner.invoke(app, ["salt", "init", "--quiet"])
    assert again.exit_code == 0 and again.output == "" and salt.read_text() == content  # idempotent
    forced = runner.invoke(app, ["salt", "init", "--force"])
    assert forced.exit_code == 0 and salt.read_text() != content
    (work / "params.yaml").write_text(yaml.safe_dump({"data": {"deid": {**deid, "salt_file": str(work / "salt")}}}))
    inside = runner.invoke(app, ["salt", "init"])
    assert inside.exit_code != 0 and "working directory" in inside.output
    assert not (work / "salt").exists()


def test_salt_init_with_environment_salt_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COVIDSCAN_CLI_TEST_SALT", "x" * 20)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"deid": {
        "salt_env": "COVIDSCAN_CLI_TEST_SALT", "salt_file": str(tmp_path.parent / f"{tmp_path.name}-none" / "salt")}}}))
    result = CliRunner().invoke(app, ["salt", "init"])
    assert result.exit_code == 0 and "environment" in result.output
    assert not (tmp_path.parent / f"{tmp_path.name}-none").exists()
