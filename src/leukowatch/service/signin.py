"""Browser sign-in and sign-out: a token becomes an HttpOnly, SameSite=Strict session cookie.

`GET /login?token=TOKEN` (the link `leukowatch serve` prints, as Jupyter and Datasette do) or the
sign-in form (`POST /login`) checks the token, starts a session and redirects to the patient list
(or the page the browser was sent from), so the token leaves the address bar at once. The form
carries a double-submit CSRF token (cookie + field) so a foreign page cannot sign a browser in to
an account of its choosing; `POST /logout` carries the session's CSRF token.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .audit import OK, record
from .auth import CSRF_FIELD, SESSION_COOKIE, SESSION_TTL, Authenticator, authenticate
from .errors import ServiceError

router = APIRouter(include_in_schema=False)

LOGIN_CSRF_COOKIE = "leukowatch_login_csrf"
DEFAULT_NEXT = "/patients"


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never `//host` or a scheme (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return DEFAULT_NEXT
    parts = urlsplit(value)
    return DEFAULT_NEXT if parts.scheme or parts.netloc else value


def _secure(request: Request) -> bool:
    public = request.app.state.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def _form(request: Request, next_path: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    from .web import templates

    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(request, "login.html", {"next_path": next_path, "error": error,
                                                                  "login_csrf": token}, status_code=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                        path="/login")
    return response


async def _sign_in(request: Request, token: str, next_path: str) -> Response:
    auth: Authenticator = request.app.state.auth
    try:
        actor = await auth.from_token(token, getattr(request.app.state, "http", None))
    except ServiceError:
        actor = None
    if actor is None:
        return _form(request, next_path, "That token is unknown, expired or revoked.", status=401)
    await asyncio.wrap_future(record(request.app.state.writer, actor, "session.start", "/login", OK))
    sid, _ = auth.start_session(actor)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
                        samesite="strict", secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, token: str | None = None, next: str | None = None) -> Response:
    if token:
        return await _sign_in(request, token, _safe_next(next))
    return _form(request, _safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    next_path = _safe_next(fields.get("next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(expected, fields.get(CSRF_FIELD, "")):
        return _form(request, next_path, "The sign-in form expired; please try again.", status=403)
    return await _sign_in(request, fields.get("token", "").strip(), next_path)


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Sign out (needs the session's CSRF token, so a foreign page cannot sign a browser out)."""
    await authenticate(request)  # checks the CSRF token of a session cookie
    request.app.state.auth.end_session(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
