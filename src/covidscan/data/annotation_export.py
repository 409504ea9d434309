"""The annotation platform's export (``covidscan annotate export``), as ingest reads it.

A folder, normally ``data/raw/annotations`` (DVC-tracked: ``dvc add data/raw/annotations``; under
``data/raw``, which the ingest stage depends on), named by ``data.annotations`` in params.yaml:

```
annotations.csv   record_id, reader, slice_index, x0, y0, x1, y1   reader: reader1 | reader2 | adjudicated
reads.csv         record_id, reader, read                           reader: an expert reader (Rad-5th, ...)
annotations.json  the same, per case (and the adjudicated reads), for people and other tools
agreement.csv     per case: status, reasons, pairs, unpaired boxes, mean IoU; agreement.json adds kappa
```
Boxes are in the record's array pixels (x = column; ``slice_index`` is the CT volume's slice, 0 for
a 2D image), as in ``annotations.parquet``. The export is keyed by the pseudonymous ``record_id`` (the
platform never sees paths), so it belongs to the ingest it was made from: the same sources and salt.

Ingest merges it (:func:`merge`): for every record id of the export, the export's boxes replace the
boxes the sources carried (e.g. a hand-written ``annotations.csv``), and its reads replace the same
readers' reads. A record id that is not in the manifest is counted and logged; an export none of
whose ids is in the manifest is an error (it was made from another ingest: another salt or sources).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from covidscan.data.manifest import ANNOTATION_READERS, EXPERT_READERS
from covidscan.data.sources.tables import read_csv, to_float, to_int
from covidscan.errors import DataError

log = logging.getLogger(__name__)

ANNOTATIONS_CSV = "annotations.csv"
READS_CSV = "reads.csv"
BOX_COLUMNS = ("record_id", "reader", "slice_index", "x0", "y0", "x1", "y1")
READ_COLUMNS = ("record_id", "reader", "read")


class AnnotationExportError(DataError):
    """The platform export is missing, malformed, or does not belong to this ingest."""


def read_export(folder: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The export's box rows and read rows, checked (reader names, numbers, box corners)."""
    folder = Path(folder)
    if not (folder / ANNOTATIONS_CSV).is_file():
        raise AnnotationExportError(f"data.annotations: {folder / ANNOTATIONS_CSV} not found "
                                    "(write it with `covidscan annotate export --out {folder}`)")
    boxes = []
    for i, row in enumerate(read_csv(folder / ANNOTATIONS_CSV, BOX_COLUMNS, ANNOTATIONS_CSV).to_dict("records"), start=2):
        reader = str(row["reader"]).strip()
        if reader not in ANNOTATION_READERS:
            raise AnnotationExportError(f"{folder / ANNOTATIONS_CSV}: row {i}: reader must be one of {list(ANNOTATION_READERS)}, got {reader!r}")
        box = {"record_id": str(row["record_id"]).strip(), "reader": reader, "slice_index": to_int(row["slice_index"], -1),
               **{k: to_float(row[k]) for k in ("x0", "y0", "x1", "y1")}}
        if box["slice_index"] < 0 or not (box["x1"] > box["x0"] and box["y1"] > box["y0"]):
            raise AnnotationExportError(f"{folder / ANNOTATIONS_CSV}: row {i}: expected slice_index >= 0 and x0 < x1, y0 < y1")
        boxes.append(box)
    reads = []
    if (folder / READS_CSV).is_file():
        for i, row in enumerate(read_csv(folder / READS_CSV, READ_COLUMNS, READS_CSV).to_dict("records"), start=2):
            reader = str(row["reader"]).strip()
            read = to_int(row["read"], -1)
            if reader not in EXPERT_READERS or read not in (0, 1):
                raise AnnotationExportError(f"{folder / READS_CSV}: row {i}: expected reader in {list(EXPERT_READERS)} and read 0|1")
            reads.append({"record_id": str(row["record_id"]).strip(), "reader": reader, "read": read})
    return boxes, reads


def merge(folder: str | Path, record_ids: set[str], annotations: list[dict[str, Any]], reads: list[dict[str, Any]]
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """The sources' annotation and read rows with the export merged in (see the module docstring).

    Returns:
        (annotation rows, read rows, counts: ``cases``, ``boxes``, ``reads``, ``unknown_record_ids``).
    """
    boxes, new_reads = read_export(folder)
    ids = {b["record_id"] for b in boxes} | {r["record_id"] for r in new_reads}
    known = ids & record_ids
    unknown = ids - record_ids
    if ids and not known:
        raise AnnotationExportError(
            f"data.annotations: none of the {len(ids)} record ids of {folder} is in this ingest's manifest; the export "
            "was made from another ingest (other sources or another de-identification salt)")
    if unknown:
        log.warning("data.annotations: %d record ids of %s are not in the manifest; their rows are left out", len(unknown), folder)
    box_ids = {b["record_id"] for b in boxes} & known
    read_keys = {(r["record_id"], r["reader"]) for r in new_reads if r["record_id"] in known}
    out_ann = [a for a in annotations if a["record_id"] not in box_ids] + [b for b in boxes if b["record_id"] in known]
    out_reads = [r for r in reads if (r["record_id"], r["reader"]) not in read_keys] + [r for r in new_reads if r["record_id"] in known]
    counts = {"cases": len(known), "boxes": sum(b["record_id"] in known for b in boxes), "reads": len(read_keys),
              "unknown_record_ids": len(unknown)}
    return out_ann, out_reads, counts


def write_tables(folder: str | Path, boxes: list[dict[str, Any]], reads: list[dict[str, Any]]) -> None:
    """Write ``annotations.csv`` and ``reads.csv`` (the columns above; rows sorted for stable diffs)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(boxes, columns=list(BOX_COLUMNS)).sort_values(list(BOX_COLUMNS[:3]) + ["x0", "y0"], kind="stable").to_csv(
        folder / ANNOTATIONS_CSV, index=False)
    pd.DataFrame(reads, columns=list(READ_COLUMNS)).sort_values(["record_id", "reader"], kind="stable").to_csv(
        folder / READS_CSV, index=False)
