"""dvc.yaml names the data layout and passes every path to every stage (as DVC's example-get-started does):

- ``pipelines/layout.py`` (the defaults for running a stage by hand) holds exactly dvc.yaml's ``vars: paths``;
- each stage's ``cmd``, as DVC resolves it, passes every path option its module's ``parser()`` declares
  (any ``type=Path`` option except ``--params``, the effective params file ``configure`` writes), and parses;
- no other module under ``pipelines/`` names a ``data/``, ``models/``, ``metrics/`` or ``reports/`` path.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipelines import layout
from tests.conftest import ROOT

NOT_A_LAYOUT_PATH = {"--params"}  # build/params/<stage>.json: covidscan.config.EFFECTIVE_DIR, written by `configure`
LAYOUT_PATH = re.compile(r"(?<![\w./-])(data|models|metrics|reports)/")


def path_options(parser: argparse.ArgumentParser) -> list[str]:
    """The parser's path options (their first flag)."""
    return [a.option_strings[0] for a in parser._actions if a.type is Path and a.option_strings and a.option_strings[0] not in NOT_A_LAYOUT_PATH]


def missing_path_options(cmd: str) -> tuple[str, list[str]]:
    """The stage module a ``python -m pipelines.<stage> ...`` cmd runs, and the path options it leaves out
    (the cmd's arguments must also parse)."""
    argv = shlex.split(cmd)
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("pipelines."), cmd
    module = importlib.import_module(argv[2])
    parser = module.parser()
    parser.parse_args(argv[3:])  # exits (SystemExit) on an argument the stage does not know
    return argv[2], [flag for flag in path_options(parser) if flag not in argv[3:]]


@pytest.fixture(scope="module")
def dvc_stages():
    """Every stage of dvc.yaml as DVC resolves it (vars, foreach)."""
    from dvc.repo import Repo

    return {stage.addressing: stage for stage in Repo(str(ROOT)).index.stages}


def test_layout_defaults_are_dvc_yaml_paths():
    (paths,) = [v["paths"] for v in yaml.safe_load((ROOT / "dvc.yaml").read_text())["vars"] if isinstance(v, dict) and "paths" in v]
    constants = {name.lower(): value for name, value in vars(layout).items() if name.isupper() and isinstance(value, Path)}
    assert constants == {k: Path(v) for k, v in paths.items()}


def test_every_stage_cmd_passes_its_path_options(dvc_stages):
    missing = {}
    for name, stage in dvc_stages.items():
        module, left_out = missing_path_options(stage.cmd)
        if left_out:
            missing[name] = f"{module}: {', '.join(left_out)}"
    assert not missing, f"dvc.yaml cmds leave out path options (pass ${{paths.x}}): {missing}"
    modules = {shlex.split(stage.cmd)[2] for stage in dvc_stages.values()}
    stage_modules = {f"pipelines.{p.stem}" for p in (ROOT / "pipelines").glob("*.py") if "def main(" in p.read_text()}
    assert stage_modules == modules, "a stage module no dvc.yaml stage runs (or the reverse)"


def test_dvc_yaml_names_the_layout_only_in_its_vars():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(k, where)
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)
        elif isinstance(node, str) and LAYOUT_PATH.match(node):
            found.append(f"{where}: {node}")

    walk(doc["stages"], "stages")
    assert not found, "write these with ${paths.x}:\n" + "\n".join(found)


def _layout_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}  # fmt: skip
    return [f"{path.name}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings and LAYOUT_PATH.search(n.value)]  # fmt: skip


def test_no_stage_module_names_a_layout_path():
    found = [hit for p in sorted((ROOT / "pipelines").glob("*.py")) if p.name != "layout.py" for hit in _layout_literals(p)]
    assert not found, "stage modules take paths from their arguments (defaults: pipelines/layout.py):\n" + "\n".join(found)


def test_the_checks_can_fail(tmp_path):
    """A cmd that leaves out a path option is reported; a module naming a layout path is found."""
    assert missing_path_options("python -m pipelines.train_teacher --teacher TS1 --processed p --splits s --out o") == (
        "pipelines.train_teacher", ["--checkpoints"])  # fmt: skip
    with pytest.raises(SystemExit):
        missing_path_options("python -m pipelines.aggregate_cv --no-such-option x")
    stage = tmp_path / "stage.py"
    stage.write_text('"""Writes models/x.pt."""\nOUT = "models/x.pt"\nMETRICS = "metrics/x.json"  # data/ in a comment\n')
    assert [hit.split(": ", 1)[1] for hit in _layout_literals(stage)] == ["'models/x.pt'", "'metrics/x.json'"]
