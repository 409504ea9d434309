"""RSNA Pneumonia Detection Challenge: DICOM chest X-rays + a labels CSV.

```
<root>/stage_2_train_labels.csv          patientId, x, y, width, height, Target (one row per box)
<root>/stage_2_detailed_class_info.csv   patientId, class   (optional)
<root>/stage_2_train_images/<patientId>.dcm
```
Labels: Target 1 -> ``pneumonia``; Target 0 -> ``normal`` when the detailed class is "Normal" (or the
detailed file is absent); "No Lung Opacity / Not Normal" is neither class and is skipped unless the
option ``not_normal_label`` names a class. Patient identity comes from the DICOM header (PatientID,
which in this set equals ``patientId``), like every DICOM source. The opacity boxes are not exported
as lesion annotations (they are not COVID-19 SAs).
"""

from __future__ import annotations

from covidscan.config import CLASSES
from covidscan.data.sources import Record, SourceAdapter, dicom_records
from covidscan.data.sources.tables import read_csv, to_int


class RSNAAdapter(SourceAdapter):
    """RSNA pneumonia (stage 2 training set layout)."""

    name = "rsna"
    default_origin = "public"
    OPTIONS = {
        "labels_csv": "stage_2_train_labels.csv",
        "classes_csv": "stage_2_detailed_class_info.csv",
        "images_dir": "stage_2_train_images",
        "not_normal_label": None,
    }

    def records(self) -> list[Record]:
        not_normal = self.options["not_normal_label"]
        if not_normal is not None and not_normal not in CLASSES:
            raise self.option_error("not_normal_label", f"null or one of {', '.join(CLASSES)}")
        labels = read_csv(self.root / self.options["labels_csv"], ("patientId", "Target"), "RSNA labels")
        target: dict[str, int] = {}
        for row in labels.to_dict("records"):
            pid = str(row["patientId"]).strip()
            target[pid] = max(target.get(pid, 0), to_int(row["Target"]))
        detailed: dict[str, str] = {}
        classes_csv = self.root / self.options["classes_csv"]
        if classes_csv.is_file():
            for row in read_csv(classes_csv, ("patientId", "class"), "RSNA class info").to_dict("records"):
                detailed[str(row["patientId"]).strip()] = str(row["class"]).strip().lower()
        images = self.root / self.options["images_dir"]
        out: list[Record] = []
        for pid in sorted(target):
            if target[pid] == 1:
                label = "pneumonia"
            elif detailed.get(pid, "normal") == "normal":
                label = "normal"
            else:
                label = not_normal
            if label is None:
                self.skipped["not_normal_no_opacity"] += 1
                continue
            path = images / f"{pid}.dcm"
            if not path.is_file():
                self.reject(pid, "missing_file")
                continue
            out.append(Record(
                key=pid, modality="xray", kind="xray", label=label,
                load=dicom_records.image_loader(path, self.limits),
                header=dicom_records.header_reader(path, self.limits),
            ))
        return out
