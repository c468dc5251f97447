"""Who may read and write stored patients: API tokens, OIDC JWTs, browser sessions and CSRF.

Why: every stored-patient endpoint used to answer anyone, and any web page a clinician opened could
read histories or post forged results. Now each such endpoint declares the role it needs:

    @router.get("/api/worklist")
    async def worklist(actor: Actor = Depends(require_role("read"))): ...

`require_role` accepts, in order: `Authorization: Bearer <token>` (a token made by `leukowatch
token create`, looked up by its SHA-256; or, when an OIDC issuer is configured, a JWT access token
whose SMART v2 scopes map to roles), then the session cookie set by `/login` (on a state-changing
request only together with the session's CSRF token, from the `X-CSRF-Token` header or the
`csrf_token` form field). No credential: 401 with `WWW-Authenticate`; a credential without the
role: 403 (and an audit row). `admin` holds every role. Pages use `require_page_role`, which sends
an unsigned browser to `/login` instead of answering 401.

Tokens: 32 random bytes (URL-safe), shown once; the store keeps only their SHA-256 (tokens are
random, so a fast hash is enough: there is nothing to guess). Sessions and the start-up sign-in
token live in this process only: a restart signs everyone out, which is the safe direction.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: TC003 - FastAPI evaluates them
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Request

from .audit import DENIED, ERROR, NOT_FOUND, OK, REJECTED, Actor, record
from .errors import ServiceError, route_template

if TYPE_CHECKING:
    import duckdb
    import httpx

    from .config import Settings
    from .writer import StoreWriter

__all__ = ["Actor", "ROLES", "require_role", "require_page_role", "audited", "stored_page_guard", "create_token", "list_tokens", "revoke_token",
           "csrf_token", "current_actor", "session_context", "SignInRequired", "Authenticator", "SESSION_COOKIE"]

ROLES: tuple[str, ...] = ("read", "ingest", "admin")
SESSION_COOKIE = "leukowatch_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: A browser session lasts a working shift; the start-up sign-in link a quarter of an hour.
SESSION_TTL = timedelta(hours=12)
STARTUP_TOKEN_TTL = timedelta(minutes=15)
#: How long a token lookup is trusted before the store is asked again (revocation through the API
#: clears it at once; `leukowatch token revoke` cannot run beside a serving process anyway).
LOOKUP_TTL_S = 30.0
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return "lw_" + secrets.token_urlsafe(32)


def has_role(actor: Actor, needed: str) -> bool:
    """`admin` holds every role; a JWT may hold several ("ingest+read")."""
    held = actor.role.split("+")
    return "admin" in held or needed in held


# ---------------------------------------------------------------------------------------------
# Tokens in the store (CLI and admin API)


def create_token(con: duckdb.DuckDBPyConnection, name: str, role: str, ttl: timedelta | None = None) -> str:
    """A new token for `name` with `role`; returns the token (only its hash is stored). A revoked
    name may be reused; an active one may not."""
    from ..model import InputError

    if role not in ROLES:
        raise InputError("--role", f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not name or len(name) > 100 or not name.isprintable():
        raise InputError("--name", "a token needs a printable name of at most 100 characters")
    row = con.execute("SELECT revoked_at FROM api_tokens WHERE name = ?", [name]).fetchone()
    if row is not None and row[0] is None:
        raise InputError("--name", f"a token named {name!r} exists; revoke it first or pick another name")
    token = new_token()
    now = datetime.now(UTC)
    con.execute("DELETE FROM api_tokens WHERE name = ?", [name])
    con.execute("INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, NULL)",
                [name, role, hash_token(token), now, now + ttl if ttl else None])
    return token


def list_tokens(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every token's name, role, dates and state (never the hash)."""
    rows = con.execute("SELECT name, role, created_at, expires_at, revoked_at FROM api_tokens ORDER BY name").fetchall()
    now = datetime.now(UTC)
    return [{"name": n, "role": r, "created_at": c.isoformat(), "expires_at": e.isoformat() if e else None,
             "revoked_at": v.isoformat() if v else None,
             "state": "revoked" if v else "expired" if e and e <= now else "active"} for n, r, c, e, v in rows]


def revoke_token(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Revoke the active token `name`; False when there is none."""
    row = con.execute("SELECT 1 FROM api_tokens WHERE name = ? AND revoked_at IS NULL", [name]).fetchone()
    if row is None:
        return False
    con.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ?", [datetime.now(UTC), name])
    return True


def active_token_count(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM api_tokens WHERE revoked_at IS NULL AND "
                      "(expires_at IS NULL OR expires_at > ?)", [datetime.now(UTC)]).fetchone()
    return int(row[0]) if row else 0


def _lookup(con: duckdb.DuckDBPyConnection, digest: str) -> Actor | None:
    row = con.execute("SELECT name, role FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL AND "
                      "(expires_at IS NULL OR expires_at > ?)", [digest, datetime.now(UTC)]).fetchone()
    return Actor(row[0], row[1], "token") if row else None


# ---------------------------------------------------------------------------------------------
# The per-process authenticator: token cache, start-up token, sessions, OIDC


@dataclass
class Session:
    actor: Actor
    csrf: str
    expires: float
    source: str = "token"  # the kind of credential that started it


@dataclass
class Authenticator:
    """`app.state.auth`: resolves credentials to Actors. One per app (sessions are per process)."""

    settings: Settings
    writer: StoreWriter
    _cache: dict[str, tuple[float, Actor | None]] = field(default_factory=dict)
    _ephemeral: dict[str, tuple[float, Actor]] = field(default_factory=dict)
    _sessions: dict[str, Session] = field(default_factory=dict)
    oidc: Any = None

    def __post_init__(self) -> None:
        if self.settings.oidc_issuer:
            from .oidc import OidcVerifier

            self.oidc = OidcVerifier(self.settings)

    def startup_token(self, ttl: timedelta = STARTUP_TOKEN_TTL) -> str:
        """A fresh admin token kept in memory only, for the sign-in link `leukowatch serve` prints."""
        token = new_token()
        self._ephemeral[hash_token(token)] = (time.time() + ttl.total_seconds(),
                                              Actor("startup-link", "admin", "startup"))
        return token

    def revoked(self, name: str) -> None:
        """After a revocation through the API: drop cached lookups and end the browser sessions
        that token started, so it stops working everywhere at once."""
        self._cache.clear()
        for sid in [sid for sid, s in self._sessions.items() if s.actor.name == name and s.source == "token"]:
            self._sessions.pop(sid, None)

    async def from_token(self, token: str, client: httpx.AsyncClient | None) -> Actor | None:
        """The Actor a bearer token stands for, or None. JWTs go to the OIDC verifier when one is set."""
        if self.oidc is not None and token.count(".") == 2:
            return await self.oidc.actor(token, client)
        digest = hash_token(token)
        now = time.time()
        ephemeral = self._ephemeral.get(digest)
        if ephemeral is not None:
            return ephemeral[1] if ephemeral[0] > now else None
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        actor = await asyncio.wrap_future(self.writer.submit(lambda con: _lookup(con, digest), transaction=False))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + LOOKUP_TTL_S, actor)
        return actor

    def start_session(self, actor: Actor) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(actor._replace(kind="session"), secrets.token_urlsafe(32),
                          time.time() + SESSION_TTL.total_seconds(), actor.kind)
        self._sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        session = self._sessions.get(sid or "")
        if session is None:
            return None
        if session.expires <= time.time():
            self._sessions.pop(sid or "", None)
            return None
        return session

    def end_session(self, sid: str | None) -> None:
        self._sessions.pop(sid or "", None)


def _unauthorized(problem: str, error: str | None = None) -> ServiceError:
    challenge = 'Bearer realm="leukowatch"' + (f', error="{error}"' if error else "")
    return ServiceError(401, "Authorization", problem, headers={"WWW-Authenticate": challenge})


class SignInRequired(Exception):
    """A page needs a signed-in browser: answered with a redirect to /login (see errors.py)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


async def _csrf_ok(request: Request, session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and "form" in (request.headers.get("content-type") or ""):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent is not None and secrets.compare_digest(sent, session.csrf)


async def authenticate(request: Request) -> Actor | None:
    """The request's Actor from a bearer token or a session cookie; None when it carries neither.
    A bearer token that does not verify is a 401 (never a fall-back to the cookie)."""
    auth: Authenticator = request.app.state.auth
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("use Authorization: Bearer <token>", "invalid_request")
        actor = await auth.from_token(token.strip(), getattr(request.app.state, "http", None))
        if actor is None:
            raise _unauthorized("unknown, expired or revoked token", "invalid_token")
        return actor
    session = auth.session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    if request.method not in _SAFE_METHODS and not await _csrf_ok(request, session):
        raise ServiceError(403, CSRF_FIELD, "missing or wrong CSRF token for this session")
    request.state.session = session
    return session.actor


async def _authorize(request: Request, role: str, actor: Actor | None) -> Actor:
    if actor is None:
        raise _unauthorized(f"this endpoint needs a token with the {role!r} role")
    if not has_role(actor, role):
        await asyncio.wrap_future(record(request.app.state.writer, actor, _route_action(request), _route(request),
                                         DENIED, request.path_params.get("patient_id")))
        raise ServiceError(403, "Authorization", f"the {actor.role!r} role may not do this (needs {role!r})")
    request.state.actor = actor
    return actor


def require_role(role: str) -> Callable[[Request], Awaitable[Actor]]:
    """FastAPI dependency: the Actor, when it holds `role` ("read", "ingest" or "admin")."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def dependency(request: Request) -> Actor:
        return await _authorize(request, role, await authenticate(request))

    return dependency


def require_page_role(role: str) -> Callable[[Request], Awaitable[Actor]]:
    """`require_role` for HTML pages: a browser without a session is sent to the sign-in page."""

    async def dependency(request: Request) -> Actor:
        actor = await authenticate(request)
        if actor is None:
            raise SignInRequired(request.url.path)
        return await _authorize(request, role, actor)

    return dependency


def open_unless_remote(role: str = "read") -> Callable[[Request], Awaitable[Actor | None]]:
    """The stateless parts (form, /api/assess, /api/knowledge, /docs): open when the service
    listens on loopback (`settings.open_stateless`), otherwise they need `role` too."""
    needs = require_role(role)

    async def dependency(request: Request) -> Actor | None:
        if request.app.state.settings.open_stateless:
            return None
        return await needs(request)

    return dependency


#: Pages that show stored patients (or the audit): a signed-in browser with the read role, audited.
STORED_PAGE_PREFIXES: tuple[str, ...] = ("/patients", "/population", "/worklist", "/audit")


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return NOT_FOUND if exc.status == 404 else ERROR if exc.status >= 500 else REJECTED
    return DENIED if isinstance(exc, SignInRequired) else ERROR


def audited(role: str, action: str | None = None, page: bool = False, prefixes: tuple[str, ...] = ()
            ) -> Callable[[Request], AsyncIterator[Actor | None]]:
    """Dependency: `require_role(role)` (or `require_page_role`), then one audit row when the
    endpoint has finished: action (default "METHOD /route/{template}"), the `patient_id` path
    parameter if any, and the outcome (ok, not-found, rejected, error). With `prefixes`, only
    paths starting with one of them are audited; the others yield None, and are guarded only when
    the stateless parts are closed (`settings.open_stateless` off, beyond loopback)."""
    guard = require_page_role(role) if page else require_role(role)

    async def dependency(request: Request) -> AsyncIterator[Actor | None]:
        if prefixes and not request.url.path.startswith(prefixes):
            if not request.app.state.settings.open_stateless:
                await guard(request)  # beyond loopback the stateless pages need a role too (not audited)
            yield None
            return
        actor = await guard(request)
        outcome = OK
        try:
            yield actor
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            await asyncio.wrap_future(record(request.app.state.writer, actor, action or _route_action(request),
                                             _route(request), outcome, request.path_params.get("patient_id")))

    return dependency


#: Router-wide dependency of the web pages: those under `STORED_PAGE_PREFIXES` need a signed-in
#: browser with the read role and are audited; the others (the CBC form, sources) stay open.
stored_page_guard = audited("read", page=True, prefixes=STORED_PAGE_PREFIXES)


def _route(request: Request) -> str:
    return route_template(request)


def _route_action(request: Request) -> str:
    return f"{request.method} {_route(request)}"


def current_actor(request: Request) -> Actor | None:
    """The signed-in browser's Actor for templates (None when not signed in); never raises."""
    auth: Authenticator | None = getattr(request.app.state, "auth", None)
    session = auth.session(request.cookies.get(SESSION_COOKIE)) if auth else None
    return session.actor if session else None


class _TemplateToken(str):
    """The CSRF token in templates: `{{ csrf_token }}` and `{{ csrf_token(request) }}` both give it."""

    def __call__(self, *_: Any) -> str:
        return str(self)


def session_context(request: Request) -> dict[str, Any]:
    """Template context of every page: `signed_in` (the Actor or None) and `csrf_token` (the
    session's token, for the hidden `csrf_token` field of a state-changing form; "" when signed out)."""
    return {"signed_in": current_actor(request), "csrf_token": _TemplateToken(csrf_token(request))}


def csrf_token(request: Request) -> str:
    """The CSRF token a state-changing form of this session carries (hidden field `csrf_token`)."""
    auth: Authenticator | None = getattr(request.app.state, "auth", None)
    session = auth.session(request.cookies.get(SESSION_COOKIE)) if auth else None
    return session.csrf if session else ""
