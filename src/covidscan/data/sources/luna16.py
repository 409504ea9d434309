"""LUNA16: CT volumes as MetaImage (``.mhd`` header + ``.raw`` data), read with SimpleITK.

```
<root>/subset0/<seriesuid>.mhd (+ .raw) ... subset9/     (or the .mhd files directly under <root>)
<root>/annotations.csv    seriesuid, coordX, coordY, coordZ, diameter_mm     (optional)
<root>/candidates.csv     seriesuid, coordX, coordY, coordZ, class           (optional, not used)
```
Every series becomes a ``ct_volume`` (int16 HU, (z, y, x), z ascending along the slice normal) with
the option ``label`` (default ``normal``: Liang et al. 2020 use LUNA16 as their public normal CT). Nodule
annotations are not COVID-19 lesions and are not exported; option ``exclude_nodules: true`` drops the
series that annotations.csv lists. The patient key is the series UID (one series per LIDC patient).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from covidscan.config import CLASSES
from covidscan.data.sources import Loaded, Record, SourceAdapter
from covidscan.data.sources.tables import read_csv
from covidscan.errors import DataError


def _loader(path: Path, max_rows: int, max_cols: int, max_slices: int):
    def load() -> Loaded:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise DataError(f"{path}: not a readable MetaImage") from None
        size = reader.GetSize()  # (x, y, z)
        if len(size) != 3 or size[0] > max_cols or size[1] > max_rows or size[2] > max_slices:
            raise DataError(f"{path}: size {size} is not 3D or exceeds the configured limits")
        image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)  # (z, y, x)
        sx, sy, sz = image.GetSpacing()
        direction = image.GetDirection()
        if len(direction) == 9 and direction[8] < 0:  # slices stored head-first: order along +normal
            arr = arr[::-1]
        hu = np.clip(np.rint(arr), -32768, 32767).astype(np.int16)
        return Loaded(array=np.ascontiguousarray(hu), spacing=(float(sz), float(sy), float(sx)),
                      meta={"TransferSyntaxUID": "application/x-metaimage", "Modality": "CT"})

    return load


class Luna16Adapter(SourceAdapter):
    """LUNA16 MetaImage volumes."""

    name = "luna16"
    default_origin = "public"
    OPTIONS = {"label": "normal", "exclude_nodules": False, "annotations_csv": "annotations.csv"}

    def records(self) -> list[Record]:
        label = self.options["label"]
        if label not in CLASSES:
            raise self.option_error("label", f"one of {', '.join(CLASSES)}")
        with_nodules: set[str] = set()
        ann = self.root / self.options["annotations_csv"]
        if self.options["exclude_nodules"] and ann.is_file():
            with_nodules = {str(s).strip() for s in read_csv(ann, ("seriesuid",), "LUNA16 annotations")["seriesuid"]}
        files = sorted(list(self.root.glob("*.mhd")) + list(self.root.glob("subset*/*.mhd")))
        out: list[Record] = []
        for path in files:
            uid = path.stem
            if uid in with_nodules:
                self.skipped["nodule_annotated"] += 1
                continue
            out.append(Record(
                key=path.relative_to(self.root).as_posix(), modality="ct", kind="ct_volume", label=label,
                load=_loader(path, self.limits.max_rows, self.limits.max_columns, self.limits.max_series_slices),
                patient_key=uid, study_key=uid,
            ))
        return out
