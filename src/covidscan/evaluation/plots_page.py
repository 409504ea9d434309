"""The DVC plots page (``dvc plots show``: the ROC/PR curves of every experiment) without a network.

``dvc plots show`` writes HTML that loads vega, vega-lite and vega-embed from a CDN, so on an
air-gapped hospital network the page is blank. Here the same pinned versions dvc-render asks for are
fetched once from the npm registry (``npm pack``, sha512-checked against :data:`VEGA_LIBRARIES`) into
a git-ignored folder (``vendor/vega/``), inlined into an HTML template, and ``dvc plots show
--html-template`` writes a self-contained page with it (``covidscan plots``, ``make plots``). The page
can then be opened, copied or mailed anywhere; the model cards (``reports/evaluate/<exp>/
model_card.html``) embed their figures and need no network either.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from covidscan.errors import CovidscanError

log = logging.getLogger(__name__)

VENDOR_DIR = Path("vendor/vega")
TEMPLATE_NAME = "dvc_plots.html"
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


class PlotsPageError(CovidscanError):
    """The offline plots page cannot be made (npm missing or unreachable, a checksum mismatch, dvc failing)."""


@dataclass(frozen=True)
class VegaLibrary:
    """One pinned npm package and the browser bundle inside it."""

    name: str
    version: str
    bundle: str  # path of the minified browser bundle inside the package
    integrity: str  # the npm registry's sha512 of the package tarball

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.min.js"


# The versions dvc-render 1.0 loads from the CDN (its VegaRenderer.SCRIPTS); its specs are written for them.
VEGA_LIBRARIES: tuple[VegaLibrary, ...] = (
    VegaLibrary("vega", "5.20.2", "build/vega.min.js",
                "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    VegaLibrary("vega-lite", "5.2.0", "build/vega-lite.min.js",
                "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    VegaLibrary("vega-embed", "6.18.2", "build/vega-embed.min.js",
                "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
)  # fmt: skip


def missing(vendor_dir: Path = VENDOR_DIR) -> list[VegaLibrary]:
    """The pinned libraries not yet in ``vendor_dir``."""
    return [lib for lib in VEGA_LIBRARIES if not (vendor_dir / lib.file_name).is_file()]


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(vendor_dir: Path = VENDOR_DIR, libraries: tuple[VegaLibrary, ...] = VEGA_LIBRARIES) -> list[Path]:
    """Fetch the pinned packages with ``npm pack`` (the registry npm is configured for), check each
    tarball's sha512 against the pin, and keep only the browser bundle, as ``<name>-<version>.min.js``.

    Raises:
        PlotsPageError: npm is not installed or cannot fetch, or a tarball does not match its pin.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise PlotsPageError("npm is not installed: install Node.js/npm once to fetch the vega libraries, or copy vendor/vega/ from a machine that has them")
    vendor_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="covidscan-npm-") as tmp:
        for lib in libraries:
            spec = f"{lib.name}@{lib.version}"
            proc = subprocess.run([npm, "pack", "--silent", spec], cwd=tmp, capture_output=True, text=True, timeout=300)
            tarball = Path(tmp) / f"{lib.name}-{lib.version}.tgz"
            if proc.returncode != 0 or not tarball.is_file():
                raise PlotsPageError(f"npm pack {spec} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
            data = tarball.read_bytes()
            if _integrity(data) != lib.integrity:
                raise PlotsPageError(f"{spec}: the tarball's sha512 {_integrity(data)} is not the pinned {lib.integrity}")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                member = tar.extractfile(f"package/{lib.bundle}")
                if member is None:
                    raise PlotsPageError(f"{spec}: no {lib.bundle} in the package")
                out = vendor_dir / lib.file_name
                out.write_bytes(member.read())
            written.append(out)
            log.info("%s -> %s", spec, out)
    return written


def write_template(vendor_dir: Path = VENDOR_DIR, path: Path | None = None) -> Path:
    """An HTML template for ``dvc plots show --html-template`` with the pinned libraries inlined (no
    ``{scripts}`` placeholder, so dvc adds no CDN script tags).

    Raises:
        PlotsPageError: a library is missing from ``vendor_dir`` (run :func:`fetch`) or cannot be inlined.
    """
    absent = missing(vendor_dir)
    if absent:
        names = ", ".join(f"{lib.name}@{lib.version}" for lib in absent)
        raise PlotsPageError(f"{vendor_dir}: {names} not fetched (run `make plots-vendor` or `covidscan plots` once with access to the npm registry)")
    scripts = []
    for lib in VEGA_LIBRARIES:
        code = (vendor_dir / lib.file_name).read_text(encoding="utf-8")
        if "</script" in code.lower() or any(p in code for p in DVC_PLACEHOLDERS):
            raise PlotsPageError(f"{vendor_dir / lib.file_name}: cannot be inlined (contains '</script' or a dvc placeholder)")
        scripts.append(f"<!-- {lib.name} {lib.version} (npm) -->\n<script>\n{code}\n</script>")
    path = path or vendor_dir / TEMPLATE_NAME
    path.write_text(
        "<!DOCTYPE html>\n<html>\n<head>\n    {refresh_tag}\n    <meta charset=\"utf-8\">\n    <title>DVC Plot</title>\n"
        + "\n".join(scripts)
        + "\n    <style>\n        table {\n            border-spacing: 15px;\n        }\n    </style>\n</head>\n<body>\n    {plot_divs}\n</body>\n</html>\n",
        encoding="utf-8",
    )
    return path


def prepare(vendor_dir: Path = VENDOR_DIR) -> Path:
    """Fetch what is missing, then write the template; returns the template's path."""
    if missing(vendor_dir):
        fetch(vendor_dir, tuple(missing(vendor_dir)))
    return write_template(vendor_dir)


def show(out_dir: Path, template: Path, cwd: Path | None = None, targets: tuple[str, ...] = ()) -> Path:
    """Run ``dvc plots show --html-template template -o out_dir``; returns the written ``index.html``.

    Raises:
        PlotsPageError: dvc failed (its message is included).
    """
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.is_file() else "dvc", "plots", "show", "--html-template", str(Path(template).resolve()), "-o", str(out_dir), *targets]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PlotsPageError(f"dvc plots show failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1000:]}")
    return (Path(cwd or ".") / out_dir) / "index.html"
