"""covid-chestxray-dataset (ieee8023, "CCD"): ``metadata.csv`` + ``images/``.

```
<root>/metadata.csv    patientid, offset, finding, RT_PCR_positive, view, modality, folder, filename, ...
<root>/images/<filename>
<root>/volumes/...     (NIfTI volumes: skipped)
```
``finding`` is mapped with :func:`~covidscan.data.sources.labels.map_label` (both the 2020 flat
findings, "COVID-19", "Klebsiella", "No Finding", and the later hierarchical ones,
"Pneumonia/Viral/COVID-19"); a row whose finding nothing maps ("todo", "Tuberculosis", ...) is
quarantined (``unknown label 'todo'``), as is one whose image is missing (``missing_file``) or whose
path leaves the folder (``bad_path``); files that are not images (the NIfTI volumes) are skipped.
``modality`` "X-ray" -> ``xray``; "CT" (slices published as images) -> ``ct_slice2d``.
Only frontal views are kept by default (option ``views``). The patient is ``patientid``; the study is
``patientid`` + ``offset`` (days since symptom onset).
"""

from __future__ import annotations

from covidscan.data.sources import Record, SourceAdapter, image_files
from covidscan.data.sources.labels import check_label_map, map_label, unknown_label_reason
from covidscan.data.sources.tables import read_csv, relative_key, to_rtpcr
from covidscan.errors import ConfigError

FRONTAL_VIEWS = ["PA", "AP", "AP Supine", "AP semi erect", "AP Erect", "Axial", "Coronal"]


class CCDAdapter(SourceAdapter):
    """ieee8023/covid-chestxray-dataset."""

    name = "ccd"
    default_origin = "public"
    OPTIONS = {"label_map": {}, "views": FRONTAL_VIEWS, "modalities": ["xray", "ct"], "metadata": "metadata.csv"}

    def records(self) -> list[Record]:
        label_map = check_label_map(self.options["label_map"], f"data.sources[{self.spec.name}].options.label_map")
        views = self.options["views"]
        if views is not None and not isinstance(views, list):
            raise self.option_error("views", "a list of view names, or null for all")
        wanted = set(self.options["modalities"])
        if not wanted <= {"xray", "ct"}:
            raise ConfigError(f"data.sources[{self.spec.name}].options.modalities: expected a subset of [xray, ct]")
        view_set = {v.strip().lower() for v in views} if views is not None else None
        df = read_csv(self.root / self.options["metadata"], ("patientid", "finding", "modality", "filename"), "CCD metadata")
        max_px = self.limits.max_rows * self.limits.max_columns
        out: list[Record] = []
        for i, row in enumerate(df.to_dict("records"), start=2):
            modality = {"x-ray": "xray", "xray": "xray", "ct": "ct"}.get(str(row["modality"]).strip().lower())
            if modality is None or modality not in wanted:
                self.skipped["other_modality"] += 1
                continue
            if view_set is not None and str(row.get("view", "")).strip().lower() not in view_set:
                self.skipped["view"] += 1
                continue
            patient = str(row["patientid"]).strip()
            folder = str(row.get("folder", "") or "images").strip() or "images"
            raw_key = f"{folder}/{row['filename']}"
            label = map_label(row["finding"], label_map)
            if label is None:
                self.reject(raw_key, unknown_label_reason(row["finding"]), row=i, patient_key=patient)
                continue
            try:
                key = relative_key(raw_key)
            except ValueError:
                self.reject(raw_key, "bad_path", row=i, patient_key=patient)
                continue
            path = self.root / key
            if path.suffix.lower() not in image_files.IMAGE_SUFFIXES:
                self.skipped["unsupported_file"] += 1  # the NIfTI volumes
                continue
            if not image_files.is_image_file(path):
                self.reject(key, "missing_file", row=i, patient_key=patient)
                continue
            out.append(Record(
                key=key, modality=modality, kind="xray" if modality == "xray" else "ct_slice2d", label=label,
                load=image_files.image_loader(path, max_px), patient_key=patient,
                study_key=f"{patient}\x1f{str(row.get('offset', '')).strip()}",
                rtpcr_initial=to_rtpcr(row.get("RT_PCR_positive", "")), row=i,
            ))
        return out
