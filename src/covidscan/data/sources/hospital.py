"""The hospital DICOM export layout (and the synthetic generator's output, which uses it).

```
<root>/dicom/...          X-ray files and CT series (a folder per series, or one multi-frame file)
<root>/labels.csv         path, label, modality[, source, centre, origin, rtpcr_initial, severity]
<root>/clinical.csv       path, wbc, neutrophil_pct, lymphocyte_pct, procalcitonin, crp   (optional)
<root>/annotations.csv    path, reader, slice_index, x0, y0, x1, y1                       (optional)
<root>/reads.csv          path, reader, read                                              (optional)
```
``path`` is relative to ``<root>``. Patient and study identity come from the DICOM header
(PatientID, StudyInstanceUID) and are pseudonymised at ingest. A CT ``path`` that is a published
image (PNG/JPEG) becomes a ``ct_slice2d`` record.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from covidscan.data.sources import Record, SourceAdapter
from covidscan.data.sources import dicom_records, image_files
from covidscan.data.sources.labels import check_label_map, map_label, unknown_label_reason
from covidscan.data.sources.tables import read_csv, relative_key, to_float, to_int, to_rtpcr
from covidscan.errors import DataError

CLINICAL_COLUMNS = ("wbc", "neutrophil_pct", "lymphocyte_pct", "procalcitonin", "crp")


class HospitalAdapter(SourceAdapter):
    """Reads ``labels.csv`` and the DICOM it points at, plus the optional clinical/annotation/read tables."""

    name = "hospital"
    default_origin = "hospital"
    OPTIONS = {"label_map": {}}

    def _by_path(self, file: str, required: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
        path = self.root / file
        if not path.is_file():
            return {}
        df = read_csv(path, required, file)
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i, row in enumerate(df.to_dict("records"), start=2):
            try:
                rows[relative_key(row["path"])].append(row)
            except ValueError:
                raise DataError(f"{path}: row {i}: 'path' must be relative to the export folder") from None
        return rows

    def records(self) -> list[Record]:
        label_map = check_label_map(self.options["label_map"], f"data.sources[{self.spec.name}].options.label_map")
        labels_csv = self.root / "labels.csv"
        df = read_csv(labels_csv, ("path", "label", "modality"), "labels.csv")
        clinical = self._by_path("clinical.csv", ("path", *CLINICAL_COLUMNS))
        annotations = self._by_path("annotations.csv", ("path", "reader", "slice_index", "x0", "y0", "x1", "y1"))
        reads = self._by_path("reads.csv", ("path", "reader", "read"))
        out: list[Record] = []
        for i, row in enumerate(df.to_dict("records"), start=2):
            try:
                key = relative_key(row["path"])
            except ValueError:
                raise DataError(f"{labels_csv}: row {i}: 'path' must be relative to the export folder") from None
            label = map_label(row["label"], label_map)
            modality = str(row["modality"]).strip().lower()
            if modality not in ("xray", "ct"):
                raise DataError(f"{labels_csv}: row {i}: modality must be xray or ct, got {row['modality']!r}")
            row_source = str(row.get("source", "")).strip() or None
            if label is None:
                self.reject(key, unknown_label_reason(row["label"]), row=i, source=row_source)
                continue
            path = self.root / key
            if not path.exists():
                self.reject(key, "missing_file", row=i, source=row_source)
                continue
            max_px = self.limits.max_rows * self.limits.max_columns
            if path.is_file() and image_files.is_image_file(path):
                kind = "xray" if modality == "xray" else "ct_slice2d"
                load, header = image_files.image_loader(path, max_px), None
                patient_key = study_key = key  # no header: each published image stands alone
            elif modality == "xray":
                kind, load = "xray", dicom_records.image_loader(path, self.limits)
                header, patient_key, study_key = dicom_records.header_reader(path, self.limits), None, None
            else:
                kind, load = "ct_volume", dicom_records.series_loader(path, self.limits)
                header, patient_key, study_key = dicom_records.header_reader(path, self.limits), None, None
            clin = None
            if key in clinical:
                c = clinical[key][0]
                clin = {k: to_float(c[k]) for k in CLINICAL_COLUMNS}
            ann = [
                {"reader": a["reader"].strip(), "slice_index": to_int(a["slice_index"]),
                 **{k: to_float(a[k]) for k in ("x0", "y0", "x1", "y1")}}
                for a in annotations.get(key, [])
            ]
            rd = [{"reader": r["reader"].strip(), "read": to_int(r["read"])} for r in reads.get(key, [])]
            origin = str(row.get("origin", "")).strip().lower()
            out.append(Record(
                key=key, modality=modality, kind=kind, label=label, load=load, header=header,
                patient_key=patient_key, study_key=study_key,
                source=row_source,
                centre=str(row.get("centre", "")).strip() or None,
                origin=origin if origin in ("public", "hospital") else None,
                rtpcr_initial=to_rtpcr(row.get("rtpcr_initial", "")),
                severity=to_float(row.get("severity", "")),
                clinical=clin, annotations=ann, reads=rd, row=i,
            ))
        return out


class SyntheticAdapter(HospitalAdapter):
    """The synthetic generator's output: the hospital export layout (labels.csv says each row's origin)."""

    name = "synthetic"
