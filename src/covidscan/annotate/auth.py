"""Accounts, passwords, sessions, CSRF and roles of the annotation platform.

- Passwords are hashed with Argon2id (``argon2-cffi``'s :class:`~argon2.PasswordHasher`, its default
  parameters, rehashed on login when those change). Nothing here implements cryptography.
- Sessions are Starlette's signed cookie sessions (``SessionMiddleware``, itsdangerous): the cookie
  holds the user id and the session's CSRF token; it is ``HttpOnly``, ``SameSite=Strict`` and, with
  ``--secure-cookies`` (behind a TLS reverse proxy), ``Secure``; it also holds the account's session
  epoch, which logging out moves on, so a copied cookie stops working at logout. The signing key is a random secret
  created at first start in a file outside the repository (mode 0600) or taken from
  ``COVIDSCAN_ANNOTATE_SECRET``; a new session (new token) is started at every login.
- CSRF: every state-changing request (POST/PUT/DELETE) must carry the session's token, in the
  ``X-CSRF-Token`` header (the pages' JavaScript) or the ``csrf_token`` form field (the login form);
  it is compared with :func:`secrets.compare_digest`. A missing or wrong token is refused (403).
- Lock-out: after ``max_failures`` (5) wrong passwords in a row an account is locked for
  ``lockout_minutes`` (15); a login to a locked account is refused (429) without checking the password.
  Unknown names get the same answer as a wrong password (and the same hashing time).
- Roles: ``reader`` (annotates as reader1 or reader2), ``senior`` (adjudicates), ``admin`` (accounts,
  audit log, export). A route for another role answers 403.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from covidscan.annotate.store import ROLES, SLOTS, User, audit, user_by_name, utcnow
from covidscan.data.manifest import EXPERT_READERS
from covidscan.errors import ConfigError

SECRET_ENV = "COVIDSCAN_ANNOTATE_SECRET"
DEFAULT_SECRET_FILE = Path("~/.config/covidscan/annotate-secret")
MAX_FAILURES = 5
LOCKOUT_MINUTES = 15.0

_hasher = PasswordHasher()
_dummy: dict[str, str] = {}  # a hash with the current parameters, verified for unknown names (same time as a real one)


class AccountError(ConfigError):
    """An account cannot be created as asked (unknown role, missing slot, name taken, short password)."""


def session_secret(path: str | Path = DEFAULT_SECRET_FILE) -> str:
    """The session-signing secret: ``$COVIDSCAN_ANNOTATE_SECRET`` or a file, created (0600) at first use."""
    env = os.environ.get(SECRET_ENV)
    if env:
        if len(env) < 32:
            raise ConfigError(f"{SECRET_ENV}: the secret must be at least 32 characters")
        return env
    p = Path(path).expanduser()
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    if p.stat().st_mode & 0o077:
        raise ConfigError(f"{p}: the session secret must not be readable by others (chmod 600 {p})")
    return p.read_text().strip()


def create_user(db: Session, username: str, password: str, role: str, slot: str | None = None,
                reads_as: str | None = None, by: User | None = None) -> User:
    """Create an account (audited). Readers need a ``slot`` (reader1|reader2); ``reads_as`` names the
    expert reader their binary reads are exported as (reads.parquet's readers)."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {list(ROLES)}, got {role!r}")
    if role == "reader" and slot not in SLOTS:
        raise AccountError(f"a reader needs --slot {'|'.join(SLOTS)}, got {slot!r}")
    if reads_as is not None and reads_as not in EXPERT_READERS:
        raise AccountError(f"reads_as must be one of {list(EXPERT_READERS)}, got {reads_as!r}")
    if not username or len(username) > 64 or not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise AccountError("username: 1-64 letters, digits, '.', '_' or '-'")
    if len(password) < 10:
        raise AccountError("password: at least 10 characters")
    if user_by_name(db, username) is not None:
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, password_hash=_hasher.hash(password), role=role,
                slot=slot if role == "reader" else None, reads_as=reads_as, failed_logins=0)
    db.add(user)
    db.flush()
    audit(db, by, "create_user", username=by.username if by else "cli", account=username, role=role, slot=user.slot,
          reads_as=reads_as)
    db.commit()
    return user


class LoginRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def authenticate(db: Session, username: str, password: str, max_failures: int = MAX_FAILURES,
                 lockout_minutes: float = LOCKOUT_MINUTES) -> User:
    """Check a login; count failures, lock the account after ``max_failures`` in a row (audited)."""
    user = user_by_name(db, username)
    now = utcnow()
    if user is None:
        try:
            _hasher.verify(_dummy.setdefault("hash", _hasher.hash("not-a-password")), password + "x")
        except VerificationError:
            pass
        audit(db, None, "login_failed", username=username[:64], reason="unknown_user")
        db.commit()
        raise LoginRefused(401, "wrong user name or password")
    if user.locked_until is not None and user.locked_until > now:
        audit(db, user, "login_refused_locked")
        db.commit()
        raise LoginRefused(429, "too many failed logins: the account is locked for a while; ask an admin")
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        user.failed_logins = (user.failed_logins or 0) + 1
        locked = user.failed_logins >= max_failures
        if locked:
            user.locked_until = now + dt.timedelta(minutes=lockout_minutes)
            user.failed_logins = 0
        audit(db, user, "login_failed", locked=locked)
        db.commit()
        if locked:
            raise LoginRefused(429, "too many failed logins: the account is locked for a while; ask an admin") from None
        raise LoginRefused(401, "wrong user name or password") from None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    audit(db, user, "login")
    db.commit()
    return user


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created when the session has none)."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse (403) a state-changing request whose token is missing or not the session's."""
    expected = request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(str(expected), str(submitted)):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")


def start_session(request: Request, user: User) -> None:
    request.session.clear()
    request.session["uid"] = user.id
    request.session["epoch"] = user.session_epoch or 0
    request.session["csrf"] = secrets.token_urlsafe(32)


def session_user(request: Request, db: Session) -> User | None:
    """The logged-in account, if the session's epoch is still the account's (not logged out since)."""
    uid = request.session.get("uid")
    user = db.get(User, uid) if isinstance(uid, int) else None
    if user is None or request.session.get("epoch") != (user.session_epoch or 0):
        return None
    return user


def end_sessions(db: Session, user: User) -> None:
    """Log the account out everywhere: every cookie issued before stops working."""
    user.session_epoch = (user.session_epoch or 0) + 1


def require_role(user: User, *roles: str) -> None:
    if user.role not in roles:
        raise HTTPException(status_code=403, detail="not allowed for your role")
