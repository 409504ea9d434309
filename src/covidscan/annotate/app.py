"""The annotation platform's web application (FastAPI): pages, JSON API and PNG images.

Client-server: the browser (``templates/`` + ``static/annotate.js``, a vanilla-JS canvas) talks to
this app, which holds the store (:mod:`covidscan.annotate.store`) and reads images only from the
ingest folder (:mod:`covidscan.annotate.cases`). Routes:

- ``GET /login``, ``POST /login`` (form + CSRF token), ``POST /logout``;
- ``GET /`` the worklist (reader: their cases; senior: the adjudication queue; admin: accounts,
  audit log, export), ``GET /case/{record_id}`` the annotation screen;
- ``GET /api/worklist[?order=uncertainty]``, ``GET /api/cases/{record_id}`` (a reader gets only their own
  boxes and read; a senior gets both readers' once the case is queued or settled),
  ``GET /api/cases/{record_id}/image?slice=&window=lung|mediastinum|preprocessing&colour=0|1``,
  ``PUT /api/cases/{record_id}/annotation`` (reader), ``POST /api/cases/{record_id}/adjudication``
  (senior), ``GET|POST /api/admin/users``, ``GET /api/admin/audit``, ``POST /api/admin/export`` (admin).

A record id that is malformed, a path, or not in the manifest answers 404; another role's route 403;
a state-changing request without the session's CSRF token 403. Responses carry a strict
Content-Security-Policy (scripts from the app only), ``X-Frame-Options: DENY`` and no caching.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.sessions import SessionMiddleware

from covidscan import RESEARCH_NOTICE
from covidscan.annotate import auth
from covidscan.annotate.cases import CaseLibrary, CaseNotFound
from covidscan.annotate.reading import (
    BadBoxes,
    WorkRefused,
    adjudication,
    box_dict,
    boxes_of,
    case_status,
    decide,
    read_of,
    save_reader_work,
)
from covidscan.annotate.store import SLOTS, Adjudication, AuditEntry, User, audit
from covidscan.annotate.workflow import BoxT

log = logging.getLogger("covidscan.annotate")
HERE = Path(__file__).parent


class BoxIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice_index: int = Field(0, ge=0)
    x0: float
    y0: float
    x1: float
    y1: float
    suggested: bool = False

    def boxt(self) -> BoxT:
        return BoxT(self.slice_index, self.x0, self.y0, self.x1, self.y1)


class AnnotationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boxes: list[BoxIn] = Field(default_factory=list, max_length=64)
    read: int | None = None
    submit: bool = False


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boxes: list[BoxIn] = Field(default_factory=list, max_length=64)
    read: int


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str
    password: str
    role: str
    slot: str | None = None
    reads_as: str | None = None


@dataclass
class Settings:
    """What ``covidscan annotate serve`` configures."""

    secret: str
    export_dir: Path  # where the admin's export writes
    secure_cookies: bool = False
    iou_threshold: float = 0.5
    max_failures: int = auth.MAX_FAILURES
    lockout_minutes: float = auth.LOCKOUT_MINUTES
    suggester: Any = None  # covidscan.annotate.suggest.Suggester or None


def create_app(library: CaseLibrary, sessions: sessionmaker[Session], settings: Settings) -> FastAPI:
    """The FastAPI application over ``library`` (the ingest folder) and the store's ``sessions``."""
    app = FastAPI(title="covidscan annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=settings.secret, session_cookie="covidscan_annotate",
                       max_age=8 * 3600, same_site="strict", https_only=settings.secure_cookies)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["notice"] = RESEARCH_NOTICE
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                                                       "style-src 'self'; frame-ancestors 'none'; form-action 'self'")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(CaseNotFound)
    async def not_found(request: Request, exc: CaseNotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(WorkRefused)
    async def refused(request: Request, exc: WorkRefused) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(BadBoxes)
    async def bad_boxes(request: Request, exc: BadBoxes) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def db_session():
        db = sessions()
        try:
            yield db
        finally:
            db.close()

    def current_user(request: Request, db: Session = Depends(db_session)) -> User:
        user = auth.session_user(request, db)
        if user is None:
            raise HTTPException(status_code=401, detail="log in first")
        return user

    def csrf(request: Request) -> None:
        auth.check_csrf(request, request.headers.get("x-csrf-token"))

    def page_user(request: Request, db: Session) -> User | None:
        return auth.session_user(request, db)

    # ------------------------------------------------------------------ pages
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "login.html", {"csrf": auth.csrf_token(request), "error": None})

    @app.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...), csrf_token: str = Form(""),
              db: Session = Depends(db_session)) -> Response:
        auth.check_csrf(request, csrf_token)
        try:
            user = auth.authenticate(db, username, password, settings.max_failures, settings.lockout_minutes)
        except auth.LoginRefused as err:
            log.info("login refused (%d)", err.status)
            return templates.TemplateResponse(request, "login.html", {"csrf": auth.csrf_token(request), "error": str(err)},
                                              status_code=err.status)
        auth.start_session(request, user)
        log.info("user %s logged in (%s)", user.username, user.role)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    def logout(request: Request, csrf_token: str = Form(""), db: Session = Depends(db_session)) -> Response:
        auth.check_csrf(request, csrf_token)
        user = page_user(request, db)
        if user is not None:
            auth.end_sessions(db, user)
            audit(db, user, "logout")
            db.commit()
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, db: Session = Depends(db_session)) -> Response:
        user = page_user(request, db)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return templates.TemplateResponse(request, "worklist.html", {"user": user, "csrf": auth.csrf_token(request),
                                                                     "suggest": settings.suggester is not None})

    @app.get("/case/{record_id}", response_class=HTMLResponse)
    def case_page(request: Request, record_id: str, db: Session = Depends(db_session)) -> Response:
        user = page_user(request, db)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        auth.require_role(user, "reader", "senior")
        case = library.get(record_id)
        return templates.TemplateResponse(request, "case.html", {"user": user, "csrf": auth.csrf_token(request), "case": case})

    # ------------------------------------------------------------------ API
    @app.get("/api/me")
    def me(user: User = Depends(current_user)) -> dict:
        return {"username": user.username, "role": user.role, "slot": user.slot}

    @app.get("/api/worklist")
    def worklist(order: str = "default", user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "reader", "senior")
        if user.role == "reader":
            rows = []
            for rid in library.ids():
                case = library.get(rid)
                row = {**case.public(), "status": case_status(db, rid, user.slot)}
                if order == "uncertainty" and settings.suggester is not None:  # the model runs once per case, then cached
                    row["uncertainty"] = settings.suggester.uncertainty(library, case)
                rows.append(row)
            if order == "uncertainty" and settings.suggester is not None:
                rows.sort(key=lambda r: -r["uncertainty"])
            return {"cases": rows}
        queued = db.scalars(select(Adjudication).where(Adjudication.status == "queued").order_by(Adjudication.record_id))
        return {"cases": [{**library.get(a.record_id).public(), "status": a.status, "reasons": a.reasons} for a in queued]}

    @app.get("/api/cases/{record_id}")
    def case_api(record_id: str, user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "reader", "senior")
        case = library.get(record_id)
        out: dict[str, Any] = {"case": case.public()}
        if user.role == "reader":
            read = read_of(db, record_id, user.slot)
            status = case_status(db, record_id, user.slot)
            out.update(status=status, boxes=[box_dict(b) for b in boxes_of(db, record_id, user.slot)],
                       read=read.read if read else None)
            if settings.suggester is not None and status != "submitted":
                out["suggestions"] = settings.suggester.boxes(library, case)
            return out
        adj = adjudication(db, record_id)
        if adj is None:
            raise HTTPException(status_code=409, detail="both readers have not submitted this case yet")
        for slot in (*SLOTS, "adjudicated"):
            read = read_of(db, record_id, slot)
            out[slot] = {"boxes": [box_dict(b) for b in boxes_of(db, record_id, slot)], "read": read.read if read else None}
        out.update(status=adj.status, reasons=adj.reasons)
        return out

    @app.get("/api/cases/{record_id}/image")
    def image(record_id: str, slice: int = 0, window: str = "lung", colour: int = 0,
              user: User = Depends(current_user)) -> Response:
        auth.require_role(user, "reader", "senior")
        png = library.render(record_id, slice, window, bool(colour))
        return Response(png, media_type="image/png")

    @app.put("/api/cases/{record_id}/annotation", dependencies=[Depends(csrf)])
    def annotate(record_id: str, body: AnnotationIn, user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "reader")
        case = library.get(record_id)
        result = save_reader_work(db, user, case, [b.boxt() for b in body.boxes], body.read, body.submit,
                                  [b.suggested for b in body.boxes], settings.iou_threshold)
        log.info("user %s saved case %s (%d boxes, submit=%s)", user.username, record_id, len(body.boxes), body.submit)
        # a reader learns only that their work is saved/submitted, not the other reader's outcome
        return {"status": "submitted" if body.submit else result.status}

    @app.get("/api/adjudication")
    def queue(user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "senior")
        return worklist("default", user, db)

    @app.post("/api/cases/{record_id}/adjudication", dependencies=[Depends(csrf)])
    def adjudicate(record_id: str, body: DecisionIn, user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "senior")
        case = library.get(record_id)
        decide(db, user, case, [b.boxt() for b in body.boxes], body.read)
        log.info("user %s adjudicated case %s", user.username, record_id)
        return {"status": "decided"}

    @app.get("/api/admin/users")
    def users(user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "admin")
        return {"users": [{"username": u.username, "role": u.role, "slot": u.slot, "reads_as": u.reads_as,
                           "locked": u.locked_until is not None} for u in db.scalars(select(User).order_by(User.id))]}

    @app.post("/api/admin/users", dependencies=[Depends(csrf)])
    def add_user(body: UserIn, user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "admin")
        try:
            new = auth.create_user(db, body.username, body.password, body.role, body.slot, body.reads_as, by=user)
        except auth.AccountError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        return {"username": new.username, "role": new.role}

    @app.get("/api/admin/audit")
    def audit_log(limit: int = 200, user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "admin")
        rows = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 5000))))
        return {"entries": [{"at": e.at.isoformat(), "user": e.username, "action": e.action, "record_id": e.record_id,
                             "detail": e.detail} for e in rows]}

    @app.post("/api/admin/export", dependencies=[Depends(csrf)])
    def export_now(user: User = Depends(current_user), db: Session = Depends(db_session)) -> dict:
        auth.require_role(user, "admin")
        from covidscan.annotate.export import export

        summary = export(db, settings.export_dir, settings.iou_threshold)
        audit(db, user, "export", n_cases=summary["n_cases"], n_boxes=summary["n_boxes"])
        db.commit()
        log.info("user %s exported %d cases", user.username, summary["n_cases"])
        return summary

    return app
