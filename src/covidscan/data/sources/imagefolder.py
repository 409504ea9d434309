"""Plain image folders, one per class (the ICNP layout and Kaggle-style sets).

```
<root>/<class folder>/*.png|jpg|jpeg|bmp|tif
```
The folder name is mapped to a class with option ``label_map`` first, then
:func:`~covidscan.data.sources.labels.map_label` (``COVID``, ``covid-19``, ``Normal``,
``Viral Pneumonia``, ``influenza`` ...); the images of an unmapped folder are quarantined (``unknown label '<folder>'``). Option ``modality``
(``xray`` default, or ``ct`` for CT slices published as images -> ``ct_slice2d``). Patients: option
``patient_regex`` (a regular expression on the file stem whose first group is the patient key, e.g.
``'^(\\d+)_'``); without it every image is its own patient, and splitting by patient cannot catch
several images of one person.
"""

from __future__ import annotations

import re

from covidscan.data.sources import Record, SourceAdapter, image_files
from covidscan.data.sources.labels import check_label_map, map_label, unknown_label_reason


class ImageFolderAdapter(SourceAdapter):
    """``<root>/<class>/*.png|jpg``."""

    name = "imagefolder"
    default_origin = "public"
    OPTIONS = {"modality": "xray", "label_map": {}, "patient_regex": None, "recursive": False}

    def records(self) -> list[Record]:
        label_map = check_label_map(self.options["label_map"], f"data.sources[{self.spec.name}].options.label_map")
        modality = self.options["modality"]
        if modality not in ("xray", "ct"):
            raise self.option_error("modality", "xray or ct")
        pattern = None
        if self.options["patient_regex"] is not None:
            try:
                pattern = re.compile(self.options["patient_regex"])
            except re.error:
                raise self.option_error("patient_regex", "a valid regular expression with one group") from None
        max_px = self.limits.max_rows * self.limits.max_columns
        out: list[Record] = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = map_label(folder.name, label_map)
            files = folder.rglob("*") if self.options["recursive"] else folder.iterdir()
            images = sorted(p for p in files if image_files.is_image_file(p))
            if label is None:
                for path in images:
                    self.reject(path.relative_to(self.root).as_posix(), unknown_label_reason(folder.name))
                continue
            for path in images:
                key = path.relative_to(self.root).as_posix()
                patient = key
                if pattern is not None:
                    m = pattern.search(path.stem)
                    if m is None or not m.groups():
                        self.skipped["patient_regex_no_match"] += 1
                        continue
                    patient = m.group(1)
                out.append(Record(
                    key=key, modality=modality, kind="xray" if modality == "xray" else "ct_slice2d", label=label,
                    load=image_files.image_loader(path, max_px), patient_key=patient, study_key=patient,
                ))
        return out
