"""`covidscan synth`: user errors are one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from covidscan.cli import app


def test_synth_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["synth", "--scale", "tiny", "--seed", "1", "--out", str(tmp_path),
                                      "--params", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "refusing" in result.output and "Traceback" not in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_synth_rejects_an_unknown_scale(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--scale", "huge", "--out", str(tmp_path / "x"),
                                      "--params", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "scale" in result.output
    assert not (tmp_path / "x").exists()
