"""A generic CSV manifest: one row per image, file, CT folder or multi-frame file.

```
<root>/manifest.csv (or the CSV itself as ``location``):
  path         relative to the CSV's folder: a PNG/JPEG, a DICOM file, or a CT series folder
  label        a class name, or covid / non_covid (see below), or any text map_label understands
  patient_id   the source's patient identity (pseudonymised at ingest)
  modality     xray | cxr | cr | dx | ct
  source       per-row source name (default: the SourceSpec's name)
  centre       optional (default: the SourceSpec's centre, else the row's source)
  group_id     optional: patients linked by duplicate images; used as the patient key when present,
               so duplicates never straddle a split
  finding      optional: the source's own finding text, used to refine non_covid
  origin       optional: public | hospital (other values, e.g. URLs, are ignored)
  study_id     optional (default: one study per row)
```
Label mapping (``/work/shared/realdata-dev/manifest.csv`` uses covid / non_covid):

* ``covid`` (any spelling map_label recognises) -> ``covid19``;
* ``non_covid``: the ``finding`` decides when it names a class other than covid19 ("No Finding" ->
  ``normal``; a pathogen, "Pneumonia", "SARS", "ARDS", "Lipoid" -> ``pneumonia``; "Influenza" ->
  ``influenza``); otherwise (no finding, or unspecific text such as "non-COVID (crawled)") the option
  ``non_covid_label`` (default ``normal``), a documented default counted in ``defaulted``
  (``non_covid_label=normal``) so the run summary says how many rows took it;
* option ``label_map`` (raw label or finding text -> class) overrides all of this;
* any other text nothing maps is never guessed: the row is quarantined with the reason
  ``unknown label '<text>'``.

Bad rows: a row whose file is missing is quarantined (``missing_file``); a file that turns out empty,
truncated or undecodable is quarantined by ingest when it is read. Both carry the row's line number
(the header is line 1), never its path. Every other row is ingested.

Kinds: images -> ``xray`` or ``ct_slice2d``; a DICOM file -> ``xray`` (X-ray) or ``ct_volume`` (CT, a
multi-frame or single-slice file); a folder -> ``ct_volume``.
"""

from __future__ import annotations

from pathlib import Path

from covidscan.config import CLASSES
from covidscan.data.sources import Record, SourceAdapter, dicom_records, image_files
from covidscan.data.sources.labels import check_label_map, map_label, unknown_label_reason
from covidscan.data.sources.tables import read_csv, relative_key, to_float, to_rtpcr
from covidscan.errors import DataError

_MODALITY = {"xray": "xray", "x-ray": "xray", "cxr": "xray", "cr": "xray", "dx": "xray", "ct": "ct"}
_NON_COVID = {"non_covid", "non-covid", "noncovid", "non covid", "negative", "other"}


class CsvAdapter(SourceAdapter):
    """Generic CSV manifest (path, label, patient_id, modality, source[, centre, group_id, finding])."""

    name = "csv"
    default_origin = "public"
    OPTIONS = {"csv": "manifest.csv", "label_map": {}, "non_covid_label": "normal", "use_group_id": True}

    def _label(self, row: dict[str, str], label_map: dict[str, str]) -> tuple[str | None, bool]:
        """(class or None, whether it is the ``non_covid_label`` default)."""
        raw = str(row["label"]).strip()
        finding = str(row.get("finding", "")).strip()
        for text in (raw, finding):
            if text and text.lower() in {k.lower() for k in label_map}:
                return map_label(text, label_map), False
        if raw.lower() in _NON_COVID:
            found = map_label(finding) if finding else None
            if found not in (None, "covid19"):
                return found, False
            return self.options["non_covid_label"], True
        return map_label(raw), False

    def records(self) -> list[Record]:
        label_map = check_label_map(self.options["label_map"], f"data.sources[{self.spec.name}].options.label_map")
        if self.options["non_covid_label"] not in CLASSES:
            raise self.option_error("non_covid_label", f"one of {', '.join(CLASSES)}")
        csv_path = self.root if self.root.is_file() else self.root / self.options["csv"]
        base: Path = csv_path.parent
        df = read_csv(csv_path, ("path", "label", "patient_id", "modality"), "CSV manifest")
        max_px = self.limits.max_rows * self.limits.max_columns
        out: list[Record] = []
        for i, row in enumerate(df.to_dict("records"), start=2):
            modality = _MODALITY.get(str(row["modality"]).strip().lower())
            if modality is None:
                raise DataError(f"{csv_path}: row {i}: modality must be one of {sorted(_MODALITY)}, got {row['modality']!r}")
            try:
                key = relative_key(row["path"])
            except ValueError:
                raise DataError(f"{csv_path}: row {i}: 'path' must be relative to the CSV's folder") from None
            group = str(row.get("group_id", "")).strip() if self.options["use_group_id"] else ""
            patient = group or str(row["patient_id"]).strip() or key
            row_source = str(row.get("source", "")).strip() or None
            label, by_default = self._label(row, label_map)
            if label is None:
                self.reject(key, unknown_label_reason(row["label"]), row=i, patient_key=patient, source=row_source)
                continue
            path = base / key
            if not path.exists():
                self.reject(key, "missing_file", row=i, patient_key=patient, source=row_source)
                continue
            if by_default:
                self.defaulted[f"non_covid_label={label}"] += 1
            header = None
            if path.is_dir():
                kind, load = "ct_volume", dicom_records.series_loader(path, self.limits)
                header = dicom_records.header_reader(path, self.limits)
            elif image_files.is_image_file(path):
                kind = "xray" if modality == "xray" else "ct_slice2d"
                load = image_files.image_loader(path, max_px)
            elif modality == "xray":
                kind, load = "xray", dicom_records.image_loader(path, self.limits)
                header = dicom_records.header_reader(path, self.limits)
            else:
                kind, load = "ct_volume", dicom_records.series_loader(path, self.limits)
                header = dicom_records.header_reader(path, self.limits)
            origin = str(row.get("origin", "")).strip().lower()
            out.append(Record(
                key=key, modality=modality, kind=kind, label=label, load=load, header=header,
                patient_key=patient, study_key=str(row.get("study_id", "")).strip() or key,
                source=row_source,
                centre=str(row.get("centre", "")).strip() or None,
                origin=origin if origin in ("public", "hospital") else None,
                rtpcr_initial=to_rtpcr(row.get("rtpcr_initial", "")),
                severity=to_float(row.get("severity", "")), row=i,
            ))
        return out
