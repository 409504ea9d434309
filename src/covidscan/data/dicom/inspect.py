"""The human-readable description behind ``covidscan inspect``: :func:`inspect_path` and :class:`InspectReport`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from covidscan.config import DicomLimits
from covidscan.data.dicom.decoder import _read_any
from covidscan.data.dicom.errors import _typed_errors
from covidscan.data.dicom.headers import SUPPORTED_SOP_CLASSES, _ts_name
from covidscan.data.dicom.results import DicomImage


# ------------------------------------------------------------------------------------------ inspect
@dataclass
class InspectReport:
    """What :func:`inspect_path` found, as (label, value) lines."""

    path: Path
    kind: str  # "image" | "series"
    lines: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        """The report as aligned text lines."""
        width = max((len(k) for k, _ in self.lines), default=0)
        body = "\n".join(f"  {k.ljust(width)}  {v}" for k, v in self.lines)
        return f"{self.path} ({self.kind})\n{body}"


def _fmt_spacing(values: tuple[float, ...]) -> str:
    return " x ".join("n/a" if math.isnan(v) else f"{v:.4g}" for v in values) + " mm"


def inspect_path(path: str | Path, limits: DicomLimits) -> InspectReport:
    """Read a DICOM file or series folder and describe it (no identifying fields).

    Args:
        path: a file (X-ray, CT slice or multi-frame CT) or a series folder.
        limits: caps checked before decoding.

    Returns:
        An :class:`InspectReport`; ``render()`` gives text.

    Raises:
        DicomError: a subclass naming the file and the problem.
    """
    path = Path(path)
    with _typed_errors(path):
        result = _read_any(path, limits, "auto")
    if isinstance(result, DicomImage):
        m = result.meta
        report = InspectReport(path=path, kind="image")
        px = result.pixels
        report.lines += [
            ("modality", f"{result.modality} ({SUPPORTED_SOP_CLASSES.get(m.get('SOPClassUID', ''), 'SOP class n/a')})"),
            ("manufacturer", f"{m.get('Manufacturer', '?')} {m.get('ManufacturerModelName', '')}".strip()),
            ("size", f"{px.shape[0]} x {px.shape[1]} (rows x cols)"),
            (
                "pixels",
                f"{m.get('PhotometricInterpretation')}, {m.get('BitsStored')}/{m.get('BitsAllocated')} bits, "
                f"{'signed' if m.get('PixelRepresentation') == 1 else 'unsigned'}",
            ),
            ("spacing", _fmt_spacing(result.spacing) + " (row x col)"),
            ("transfer syntax", f"{m.get('TransferSyntaxName')} ({m.get('TransferSyntaxUID')})"),
        ]
        if result.modality == "CT":
            report.lines.append(("LUTs", f"rescale slope {m.get('RescaleSlope')} intercept {m.get('RescaleIntercept')} -> HU"))
            report.lines.append(("HU range", f"{px.min():.0f} .. {px.max():.0f} (mean {px.mean():.1f})"))
            if m.get("padding_pixels"):
                report.lines.append(("padding", f"{m['padding_pixels']} pixels set to {limits.padding_hu} HU"))
        else:
            voi = {"lut": "VOI LUT sequence", "window": f"window C={m.get('WindowCenter')} W={m.get('WindowWidth')}", "none": "none"}
            report.lines.append(
                ("LUTs", f"modality {'LUT/rescale' if 'RescaleSlope' in m else 'identity'}, VOI {voi[m['voi']]}"
                 f"{', MONOCHROME1 inverted' if m['inverted'] else ''}")
            )
            report.lines.append(("value range", f"{px.min():.1f} .. {px.max():.1f} after LUTs (bright = dense)"))
        return report
    m = result.meta
    hu = result.hu
    report = InspectReport(path=path, kind="series")
    report.lines += [
        ("modality", f"CT ({m.get('series_source')}, {m.get('Manufacturer', '?')})"),
        ("slices", f"{hu.shape[0]} x {hu.shape[1]} x {hu.shape[2]} (z x rows x cols)"),
        ("spacing", _fmt_spacing(result.spacing) + " (z x row x col)"),
        ("z range", f"{m['z_first_mm']:.2f} .. {m['z_last_mm']:.2f} mm along the slice normal"),
        ("orientation", f"{m['orientation']} (tilt {m['tilt_deg']:.1f} deg)"),
        ("transfer syntax", ", ".join(_ts_name(t) for t in m["transfer_syntaxes"])),
        ("HU range", f"{int(hu.min())} .. {int(hu.max())}"),
    ]
    if m.get("padding_pixels"):
        report.lines.append(("padding", f"{m['padding_pixels']} pixels set to {limits.padding_hu} HU"))
    return report
