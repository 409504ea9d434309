"""The covidscan CLI: --help everywhere, user errors as one line with a non-zero exit."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from covidscan.cli import app

runner = CliRunner()


def all_command_paths() -> list[list[str]]:
    root = get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append(prefix + [name])
            walk(sub, prefix + [name])

    walk(root, [])
    return paths


def test_root_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "research use" in result.output.lower()


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_help(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_bad_params_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    result = runner.invoke(app, ["check-params", "--params", str(bad)])
    assert result.exit_code == 2
    text = result.output.strip()
    assert "unknown key 'trian'" in text and "Traceback" not in text
    assert len(text.splitlines()) == 1


def test_missing_params_file_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["check-params", "--params", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output
