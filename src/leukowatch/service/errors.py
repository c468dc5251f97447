"""Errors as JSON that name the field, a request size limit, and no stack trace ever reaching a client.

Every failure a client can cause becomes `{"error": {"field": ..., "problem": ...}}` with a 4xx
status, the same field naming the CLI uses (`observations[1].unit`). Anything unexpected is logged
server-side (type and traceback, never the request body) and answered with a bare 500.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..model import InputError

log = logging.getLogger("leukowatch.service")
#: Seconds a client should wait before retrying when the store is held by another process.
RETRY_AFTER_S = 5


def error_body(field: str | None, problem: str) -> dict[str, Any]:
    return {"error": {"field": field, "problem": problem}}


class ServiceError(Exception):
    """A client-visible failure with a status code (e.g. 412 for missing CDS data, 415 media type)."""

    def __init__(self, status: int, field: str | None, problem: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(problem)
        self.status, self.field, self.problem, self.headers = status, field, problem, headers


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware: refuse bodies over `limit` bytes with 413 before the app reads them.

    Checks Content-Length up front and counts streamed chunks too (chunked uploads have no length).
    Pure ASGI rather than BaseHTTPMiddleware because it sits on every request of a latency goal.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._reject(send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(error_body("body", f"request body larger than {self.limit} bytes"), status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _validation_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(error_body(exc.field, exc.problem), status_code=422)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.field, exc.problem), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse(error_body("body", "request body too large"), status_code=413)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return JSONResponse(error_body(_validation_field(tuple(first.get("loc", ()))), str(first.get("msg"))),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return JSONResponse(error_body(None, str(exc.detail)), status_code=exc.status_code, headers=headers)

    from ..io.store import StoreBusy
    from .auth import SignInRequired

    @app.exception_handler(StoreBusy)
    async def _busy(request: Request, exc: StoreBusy) -> JSONResponse:
        # Retryable on purpose: a 4xx would tell a lab system to drop the message.
        log.warning("store busy (held by another process) on %s %s", request.method, route_template(request))
        return JSONResponse(error_body("store", "the store is in use by another process; retry shortly"),
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", status_code=303)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Type and traceback for the operator; no body, no values, and the route template rather
        # than the path (a path carries the patient id).
        log_unexpected(exc, request.method, route_template(request))
        return JSONResponse(error_body(None, "internal error"), status_code=500)


def log_unexpected(exc: BaseException, method: str | None, route: str) -> None:
    """Type, route template and frames for the operator; never the exception's message (it may
    quote a value), the path (it carries the patient id) or the body."""
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    log.error("unhandled %s on %s %s\n%s", type(exc).__name__, method, route, frames)


def route_template(request: Request) -> str:
    """`/api/patients/{patient_id}/history` rather than the path: safe to log (no patient id)."""
    return scope_route(request.scope)


_CONVERTER = re.compile(r"\{(\w+):\w+\}")


def scope_route(scope: Scope) -> str:
    """The route template of a request's scope, without path converters (`{patient_id:path}` is
    written `{patient_id}`, so the audit and the logs name a route the same way whatever it matches)."""
    path = getattr(scope.get("route"), "path", None)
    return _CONVERTER.sub(r"{\1}", path) if path else "(no route)"


__all__ = ["BodySizeLimit", "ServiceError", "error_body", "install_error_handlers", "HTTPException"]
