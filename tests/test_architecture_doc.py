"""docs/ARCHITECTURE.md names every module of the package and every stage (one line each), so the map a
newcomer reads first cannot fall behind the layout."""

from __future__ import annotations

from tests.conftest import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"


def _modules() -> list[str]:
    found = []
    for base in ("src/covidscan", "pipelines"):
        for path in sorted((ROOT / base).rglob("*.py")):
            if path.name == "__init__.py" and not path.read_text().strip():
                continue  # an empty package marker
            found.append(str(path.relative_to(ROOT)))
    return found


def test_every_module_has_its_line_in_architecture_md():
    text = DOC.read_text()
    missing = [m for m in _modules() if f"`{m}`" not in text]
    assert not missing, f"{DOC.name} has no line for: {', '.join(missing)} (one line each: the module and what it does)"


def test_architecture_md_names_no_module_that_is_gone():
    text = DOC.read_text()
    import re

    named = set(re.findall(r"`((?:src/covidscan|pipelines)/[\w/]+\.py)`", text))
    gone = sorted(n for n in named if not (ROOT / n).is_file())
    assert not gone, f"{DOC.name} names modules that no longer exist: {', '.join(gone)}"
