"""The cases the platform shows: the de-identified records of an ingest folder, rendered as PNG.

Only what ingest wrote is read (``manifest.parquet`` and the content-addressed ``arrays/``), so
nothing identifying can reach the browser: a case is addressed by its pseudonymous ``record_id``
(``r-`` + 16 hex digits), never by a path, and an id that is malformed or not in the manifest is
"not found". The label is not shown to readers (they read blind).

Rendering: an X-ray (or a CT published as a 2D slice) is min-max normalised to 8 bits as in
preprocessing (:func:`covidscan.preprocess.xray.normalise_to_uint8`); a CT slice is windowed in HU
(:func:`covidscan.preprocess.ct.window_uint8`) with a preset: ``lung`` (W1500 L-600),
``mediastinum`` (W350 L50) or ``preprocessing`` (the pipeline's own window, ``preprocess.ct_window_*``).
``colour`` applies the preprocessing's pseudo-colour (:func:`covidscan.preprocess.xray.pseudo_colour`,
``preprocess.colormap``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covidscan.config import PreprocessConfig
from covidscan.data import manifest as mf
from covidscan.errors import DataError
from covidscan.preprocess.ct import window_uint8
from covidscan.preprocess.xray import normalise_to_uint8, pseudo_colour

RECORD_ID = re.compile(r"^r-[0-9a-f]{16}$")
# name -> (centre, width) in HU
WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "mediastinum": (50.0, 350.0)}


class CaseNotFound(DataError):
    """No case with this id (malformed, a path, or not in the manifest): the app answers 404."""


@dataclass(frozen=True)
class Case:
    record_id: str
    modality: str
    kind: str
    rows: int
    cols: int
    n_slices: int

    def public(self) -> dict:
        """What the browser may see of a case (no label, no source, no path)."""
        return {"record_id": self.record_id, "modality": self.modality, "kind": self.kind, "rows": self.rows,
                "cols": self.cols, "n_slices": self.n_slices}


class CaseLibrary:
    """The ingest folder's records, by record id."""

    def __init__(self, ingest_dir: str | Path, pre: PreprocessConfig | None = None) -> None:
        self.root = Path(ingest_dir)
        if not (self.root / mf.MANIFEST_FILE).is_file():
            raise DataError(f"{self.root}: no {mf.MANIFEST_FILE}; run ingest first (dvc repro ingest) or pass --ingest")
        self.pre = pre or PreprocessConfig()
        self.manifest: pd.DataFrame = mf.read_manifest(self.root).set_index("record_id", drop=False)
        self._cache: dict[str, np.ndarray] = {}

    def ids(self) -> list[str]:
        return list(self.manifest.index)

    def get(self, record_id: str) -> Case:
        if not isinstance(record_id, str) or not RECORD_ID.match(record_id) or record_id not in self.manifest.index:
            raise CaseNotFound("no such case")
        r = self.manifest.loc[record_id]
        return Case(record_id, str(r["modality"]), str(r["kind"]), int(r["rows"]), int(r["cols"]), int(r["n_slices"]))

    def label(self, record_id: str) -> str:
        return str(self.manifest.loc[self.get(record_id).record_id, "label"])

    def array(self, record_id: str) -> np.ndarray:
        case = self.get(record_id)
        if record_id not in self._cache:
            if len(self._cache) > 16:
                self._cache.pop(next(iter(self._cache)))
            rel = str(self.manifest.loc[case.record_id, "array_path"])
            path = (self.root / rel).resolve()
            if self.root.resolve() not in path.parents:
                raise CaseNotFound("no such case")
            self._cache[record_id] = np.load(path, allow_pickle=False)
        return self._cache[record_id]

    def render(self, record_id: str, slice_index: int = 0, window: str = "lung", colour: bool = False) -> bytes:
        """The case's image (a CT: one slice) as PNG bytes, at the array's own size."""
        case = self.get(record_id)
        arr = self.array(record_id)
        if case.kind == "ct_volume":
            if not 0 <= slice_index < arr.shape[0]:
                raise CaseNotFound("no such slice")
            centre, width = WINDOWS.get(window, (self.pre.ct_window_center, self.pre.ct_window_width))
            grey = window_uint8(arr[slice_index], centre, width)
        else:
            if slice_index != 0:
                raise CaseNotFound("no such slice")
            grey = normalise_to_uint8(arr, self.pre.xray_normalise, tuple(self.pre.xray_percentiles), what=record_id)
        if colour:
            rgb = pseudo_colour(grey, self.pre.colormap).transpose(1, 2, 0)
            ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
        else:
            ok, png = cv2.imencode(".png", grey)
        if not ok:
            raise DataError(f"case {record_id}: PNG encoding failed")
        return png.tobytes()
