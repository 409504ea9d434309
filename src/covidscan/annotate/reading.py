"""The readers' and seniors' work on cases, in the store: saving boxes and reads, submitting,
settling a case once both readers submitted (:mod:`covidscan.annotate.workflow`'s rule) and the
senior's decision. Every change writes an audit entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from covidscan.annotate.cases import Case
from covidscan.annotate.store import SLOTS, Adjudication, Box, Read, Submission, User, audit
from covidscan.annotate.workflow import BoxT, auto_adjudicate, compare
from covidscan.errors import DataError

MAX_BOXES = 64  # per case and author; the seed has 1-2 per X-ray and 2-5 annotated CT slices


class WorkRefused(DataError):
    """A change the workflow does not allow (a submitted case, a case not in the queue): HTTP 409."""


class BadBoxes(DataError):
    """Boxes outside the image or its slices, inverted, or too many: HTTP 422."""


def check_boxes(case: Case, boxes: Sequence[BoxT]) -> list[BoxT]:
    if len(boxes) > MAX_BOXES:
        raise BadBoxes(f"at most {MAX_BOXES} boxes per case")
    for b in boxes:
        if not (0 <= b.slice_index < case.n_slices and 0 <= b.x0 < b.x1 <= case.cols and 0 <= b.y0 < b.y1 <= case.rows):
            raise BadBoxes(f"box {b} is not inside the image ({case.cols}x{case.rows}, {case.n_slices} slices) or is inverted")
    return list(boxes)


def boxes_of(db: Session, record_id: str, slot: str) -> list[Box]:
    return list(db.scalars(select(Box).where(Box.record_id == record_id, Box.author_slot == slot).order_by(Box.id)))


def read_of(db: Session, record_id: str, slot: str) -> Read | None:
    return db.scalar(select(Read).where(Read.record_id == record_id, Read.author_slot == slot))


def submitted(db: Session, record_id: str, slot: str) -> bool:
    return db.scalar(select(Submission.id).where(Submission.record_id == record_id, Submission.slot == slot)) is not None


def adjudication(db: Session, record_id: str) -> Adjudication | None:
    return db.scalar(select(Adjudication).where(Adjudication.record_id == record_id))


def as_boxt(boxes: Sequence[Box]) -> list[BoxT]:
    return [BoxT(b.slice_index, b.x0, b.y0, b.x1, b.y1) for b in boxes]


def box_dict(b: Box | BoxT) -> dict:
    return {"slice_index": int(b.slice_index), "x0": float(b.x0), "y0": float(b.y0), "x1": float(b.x1), "y1": float(b.y1)}


def _replace(db: Session, record_id: str, slot: str, author: User | None, boxes: Sequence[BoxT], read: int | None,
             suggested: Sequence[bool] = ()) -> None:
    db.execute(delete(Box).where(Box.record_id == record_id, Box.author_slot == slot))
    for i, b in enumerate(boxes):
        db.add(Box(record_id=record_id, author_slot=slot, author_id=author.id if author else None, slice_index=b.slice_index,
                   x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1, from_suggestion=int(bool(suggested[i])) if i < len(suggested) else 0))
    existing = read_of(db, record_id, slot)
    if read is None:
        if existing is not None:
            db.delete(existing)
    elif existing is None:
        db.add(Read(record_id=record_id, author_slot=slot, author_id=author.id if author else None, read=int(read)))
    else:
        existing.read, existing.author_id = int(read), author.id if author else None


@dataclass
class Settled:
    status: str  # draft | waiting (for the other reader) | agreed | queued
    reasons: list[str]


def save_reader_work(db: Session, user: User, case: Case, boxes: Sequence[BoxT], read: int | None, submit: bool,
                     suggested: Sequence[bool] = (), iou_threshold: float = 0.5) -> Settled:
    """Save a reader's boxes and read on a case (their slot only); ``submit`` makes it final."""
    slot = user.slot
    if slot not in SLOTS:
        raise WorkRefused("only readers annotate")
    if submitted(db, case.record_id, slot):
        raise WorkRefused("this case is already submitted")
    if read not in (None, 0, 1):
        raise BadBoxes("read must be 0, 1 or null")
    if submit and read is None:
        raise BadBoxes("record the COVID-19 read (yes or no) before submitting")
    boxes = check_boxes(case, boxes)
    _replace(db, case.record_id, slot, user, boxes, read, suggested)
    audit(db, user, "save_boxes", case.record_id, slot=slot, boxes=[box_dict(b) for b in boxes], read=read,
          accepted_suggestions=sum(bool(s) for s in suggested))
    if not submit:
        db.commit()
        return Settled("draft", [])
    db.add(Submission(record_id=case.record_id, slot=slot, user_id=user.id))
    audit(db, user, "submit", case.record_id, slot=slot)
    db.flush()
    result = settle(db, case.record_id, iou_threshold)
    db.commit()
    return result


def settle(db: Session, record_id: str, iou_threshold: float = 0.5) -> Settled:
    """When both readers submitted: compare; adjudicate an agreed case by the rule, queue the others."""
    if not all(submitted(db, record_id, s) for s in SLOTS):
        return Settled("waiting", [])
    first, second = (as_boxt(boxes_of(db, record_id, s)) for s in SLOTS)
    reads = [read_of(db, record_id, s) for s in SLOTS]
    cmp = compare(first, second, *(r.read if r else None for r in reads), threshold=iou_threshold)
    if cmp.agreed:
        adjudicated = auto_adjudicate(first, second, cmp)
        _replace(db, record_id, "adjudicated", None, adjudicated, cmp.read_first)
        db.add(Adjudication(record_id=record_id, status="agreed", reasons=[]))
        audit(db, None, "auto_adjudicate", record_id, username="rule",
              rule=f"mean of IoU>={iou_threshold} pairs; common read", boxes=[box_dict(b) for b in adjudicated], read=cmp.read_first)
        return Settled("agreed", [])
    db.add(Adjudication(record_id=record_id, status="queued", reasons=cmp.reasons))
    audit(db, None, "queue_for_adjudication", record_id, username="rule", reasons=cmp.reasons)
    return Settled("queued", cmp.reasons)


def decide(db: Session, senior: User, case: Case, boxes: Sequence[BoxT], read: int) -> None:
    """A senior's decision on a queued case: the adjudicated boxes and read."""
    adj = adjudication(db, case.record_id)
    if adj is None or adj.status != "queued":
        raise WorkRefused("this case is not waiting for adjudication")
    if read not in (0, 1):
        raise BadBoxes("the adjudicated read must be 0 or 1")
    boxes = check_boxes(case, boxes)
    _replace(db, case.record_id, "adjudicated", senior, boxes, read)
    adj.status, adj.decided_by = "decided", senior.id
    audit(db, senior, "adjudicate", case.record_id, boxes=[box_dict(b) for b in boxes], read=read)
    db.commit()


def case_status(db: Session, record_id: str, slot: str | None) -> str:
    """A case as a worklist shows it: new, draft, submitted (reader's view), or the adjudication's status."""
    adj = adjudication(db, record_id)
    if slot is None:
        return adj.status if adj else "reading"
    if submitted(db, record_id, slot):
        return "submitted"
    if boxes_of(db, record_id, slot) or read_of(db, record_id, slot):
        return "draft"
    return "new"
