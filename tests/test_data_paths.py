"""No library module under src/covidscan names a ``data/`` path: the data layout is dvc.yaml's, and the
stages (pipelines/) and the CLI pass the paths in. Found with ``ast`` (string constants, f-string parts;
docstrings and comments do not count)."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

SRC = ROOT / "src" / "covidscan"
DATA_PATH = re.compile(r"(?<![\w./-])data/")
# file -> why it may name data/ paths
ALLOWED = {
    "cli.py": "an entry point: its user-facing defaults (one block of constants)",
    "config/sections.py": "DataConfig's default source location, the documented default of params.yaml's data.sources",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def data_literals(path, base=ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    return [f"{path.relative_to(base)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip and DATA_PATH.search(n.value)]  # fmt: skip


def test_no_library_module_names_a_data_path():
    found = [hit for path in sorted(SRC.rglob("*.py")) if str(path.relative_to(SRC)) not in ALLOWED for hit in data_literals(path)]
    assert not found, "library modules take data paths as arguments (dvc.yaml / pipelines / the CLI give them):\n" + "\n".join(found)


def test_the_scan_finds_a_data_path(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Reads data/processed."""\nX = "data/processed"  # data/ in a comment\nY = f"{X}/data/x"\n')
    assert [hit.split(": ", 1)[1] for hit in data_literals(module, tmp_path)] == ["'data/processed'"]

