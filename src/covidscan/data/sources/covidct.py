"""UCSD-AI4H COVID-CT: CT slices published as images, one folder per class.

```
<root>/CT_COVID/*.png|jpg          (or <root>/Images-processed/CT_COVID/)
<root>/CT_NonCOVID/*.png|jpg       (or <root>/Images-processed/CT_NonCOVID/)
<root>/Data-split/COVID/{train,val,test}CT_COVID.txt          optional, one file name per line
<root>/Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt
```
Records are ``ct_slice2d``. Labels: CT_COVID -> covid19; CT_NonCOVID -> option ``non_covid_label``
(default ``normal``: the set's non-COVID slices are mostly normal or non-infectious, not CAP; use
``label_map``-style overrides in another adapter if you know better). Option ``splits`` (e.g.
``[train, val]``) keeps only the files listed in those split files; ``null`` keeps all.

Patients: the set has no patient column in its folders, so images are grouped conservatively by the
file-name stem with the page/figure/sub-image suffixes removed (``2020.02.10.20021584-p6-52%0`` ->
``2020.02.10.20021584``; ``12%3`` -> ``12``): all images cut from one paper figure or one case share a
patient pseudonym, which over-groups rather than leaks across splits.
"""

from __future__ import annotations

import re
from pathlib import Path

from covidscan.config import CLASSES
from covidscan.data.sources import Record, SourceAdapter, image_files

_CLASS_DIRS = {"CT_COVID": ("COVID", "covid19"), "CT_NonCOVID": ("NonCOVID", None)}


def patient_group(stem: str) -> str:
    """The conservative patient key of a COVID-CT file stem (see the module docstring)."""
    key = stem.split("%", 1)[0]
    key = re.sub(r"-p\d+-\d+.*$", "", key)
    key = re.sub(r"_\d+$", "", key)
    return key or stem


class CovidCTAdapter(SourceAdapter):
    """UCSD COVID-CT folders (+ optional split lists)."""

    name = "covidct"
    default_origin = "public"
    OPTIONS = {"non_covid_label": "normal", "splits": None, "split_dir": "Data-split"}

    def _class_dir(self, name: str) -> Path | None:
        for base in (self.root, self.root / "Images-processed"):
            if (base / name).is_dir():
                return base / name
        return None

    def _allowed(self, sub: str, cls_dir: str) -> set[str] | None:
        splits = self.options["splits"]
        if splits is None:
            return None
        if not isinstance(splits, list) or not set(splits) <= {"train", "val", "test"}:
            raise self.option_error("splits", "null or a list drawn from [train, val, test]")
        allowed: set[str] = set()
        for split in splits:
            f = self.root / self.options["split_dir"] / sub / f"{split}{cls_dir}.txt"
            if f.is_file():
                allowed |= {line.strip() for line in f.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()}
        return allowed

    def records(self) -> list[Record]:
        non_covid = self.options["non_covid_label"]
        if non_covid not in CLASSES:
            raise self.option_error("non_covid_label", f"one of {', '.join(CLASSES)}")
        max_px = self.limits.max_rows * self.limits.max_columns
        out: list[Record] = []
        found = False
        for cls_dir, (sub, label) in _CLASS_DIRS.items():
            folder = self._class_dir(cls_dir)
            if folder is None:
                continue
            found = True
            allowed = self._allowed(sub, cls_dir)
            for path in sorted(p for p in folder.iterdir() if image_files.is_image_file(p)):
                if allowed is not None and path.name not in allowed:
                    self.skipped["not_in_selected_splits"] += 1
                    continue
                group = f"{cls_dir}/{patient_group(path.stem)}"
                out.append(Record(
                    key=f"{cls_dir}/{path.name}", modality="ct", kind="ct_slice2d", label=label or non_covid,
                    load=image_files.image_loader(path, max_px), patient_key=group, study_key=group,
                ))
        if not found:
            from covidscan.errors import DataError

            raise DataError(f"data.sources[{self.spec.name}].location {self.root}: no CT_COVID or CT_NonCOVID folder")
        return out
