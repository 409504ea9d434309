"""Export of the platform's work in the format ingest reads (:mod:`covidscan.data.annotation_export`)
plus the agreement report.

Only settled cases are exported (agreed, adjudicated automatically, or decided by a senior): their
reader1, reader2 and adjudicated boxes, and each reader's binary read under the expert-reader name of
their account (``reads_as``; a reader without one is left out of reads.csv, the JSON keeps it).
The agreement report lists, per settled case, the status, the reasons it was queued, the number of
pairs and unpaired boxes and the mean IoU of the pairs; ``agreement.json`` adds Cohen's kappa of the
two readers' reads over those cases.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from covidscan.annotate.reading import as_boxt, box_dict, boxes_of, read_of
from covidscan.annotate.store import SLOTS, Adjudication, User
from covidscan.annotate.workflow import compare, reads_kappa
from covidscan.data.annotation_export import write_tables


def export(db: Session, out_dir: str | Path, iou_threshold: float = 0.5) -> dict:
    """Write annotations.csv, reads.csv, annotations.json, agreement.csv and agreement.json to ``out_dir``.

    Returns:
        The summary (``n_cases``, ``n_boxes``, ``n_reads``, ``kappa``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    users = {u.id: u for u in db.scalars(select(User))}
    settled = list(db.scalars(select(Adjudication).where(Adjudication.status.in_(("agreed", "decided"))).order_by(Adjudication.record_id)))
    boxes, reads, cases, agreement = [], [], [], []
    r1, r2 = [], []
    for adj in settled:
        rid = adj.record_id
        case = {"record_id": rid, "status": adj.status, "reasons": adj.reasons or [], "boxes": {}, "reads": {}}
        for slot in (*SLOTS, "adjudicated"):
            rows = boxes_of(db, rid, slot)
            case["boxes"][slot] = [box_dict(b) for b in rows]
            boxes += [{"record_id": rid, "reader": slot, **box_dict(b)} for b in rows]
            rd = read_of(db, rid, slot)
            case["reads"][slot] = rd.read if rd else None
            author = users.get(rd.author_id) if rd and rd.author_id else None
            if rd and slot in SLOTS and author is not None and author.reads_as:
                reads.append({"record_id": rid, "reader": author.reads_as, "read": rd.read})
        cmp = compare(as_boxt(boxes_of(db, rid, SLOTS[0])), as_boxt(boxes_of(db, rid, SLOTS[1])), case["reads"][SLOTS[0]],
                      case["reads"][SLOTS[1]], iou_threshold)
        if case["reads"][SLOTS[0]] is not None and case["reads"][SLOTS[1]] is not None:
            r1.append(case["reads"][SLOTS[0]])
            r2.append(case["reads"][SLOTS[1]])
        agreement.append({"record_id": rid, "status": adj.status, "reasons": ";".join(adj.reasons or []), "n_pairs": len(cmp.pairs),
                          "unpaired_reader1": len(cmp.unpaired_first), "unpaired_reader2": len(cmp.unpaired_second),
                          "mean_iou": round(cmp.mean_iou, 4), "read_reader1": case["reads"][SLOTS[0]], "read_reader2": case["reads"][SLOTS[1]]})
        cases.append(case)
    write_tables(out, boxes, reads)
    kappa = reads_kappa(r1, r2)
    summary = {"n_cases": len(cases), "n_boxes": len(boxes), "n_reads": len(reads), "iou_threshold": iou_threshold,
               "kappa": None if math.isnan(kappa) else round(kappa, 4),
               "n_agreed": sum(a.status == "agreed" for a in settled), "n_decided": sum(a.status == "decided" for a in settled)}
    (out / "annotations.json").write_text(json.dumps({"cases": cases}, indent=2, sort_keys=True) + "\n")
    pd.DataFrame(agreement, columns=["record_id", "status", "reasons", "n_pairs", "unpaired_reader1", "unpaired_reader2", "mean_iou",
                                     "read_reader1", "read_reader2"]).to_csv(out / "agreement.csv", index=False)
    (out / "agreement.json").write_text(json.dumps({**summary, "cases": agreement}, indent=2, sort_keys=True) + "\n")
    return summary
