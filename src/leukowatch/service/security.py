"""The browser boundary: Host allow-list, CORS only where CDS Hooks needs it, security headers.

Why each:
- Host: a page on an attacker's domain can point its DNS name at 127.0.0.1 (DNS rebinding) and
  then read this service as "same origin". Requests whose Host is not an allowed name (loopback
  names, plus `--allowed-host`) get 400 before any route runs.
- CORS: CDS Hooks sandboxes call `/cds-services*` from the browser with bearer JWTs and no cookies,
  so any origin may call those; every other path sends no `Access-Control-Allow-*`, so a foreign
  page can neither read stored patients nor send credentialed requests that it may read back.
- Headers: a CSP without inline scripts (scripts only from this origin), frame-ancestors none
  (no clickjacking), nosniff, no Referer (patient ids sit in URLs), and `Cache-Control: no-store`
  on everything but static assets, so no patient page or PDF lingers in a shared PC's cache.

Pure ASGI (not BaseHTTPMiddleware): it sits on every request of a latency goal.
"""

from __future__ import annotations

import json

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body, log_unexpected, scope_route

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]
#: Not on /cds-services*, which other origins may read (CORS).
_SAME_ORIGIN_RESOURCE = (b"cross-origin-resource-policy", b"same-origin")
_CACHEABLE_PREFIXES = ("/static/", "/swagger-ui/")
_CDS_PREFIX = "/cds-services"
#: Origins that may call the CDS Hooks endpoints (sandboxes and EHR front ends, bearer JWTs, no
#: cookies). `BrowserBoundary` hands requests to its CORS layer only under `_CDS_PREFIX`.
_CDS_ORIGINS: tuple[str, ...] = ("*",)


def host_name(value: bytes) -> str:
    """The host part of a Host header, lower case, without port (IPv6 keeps its brackets)."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[: text.find("]") + 1] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class BrowserBoundary:
    """Host check, CORS on /cds-services* only, and security headers on every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str], https: bool = False) -> None:
        self.app = app
        self.allowed = allowed_hosts
        self.cors = CORSMiddleware(app, allow_origins=list(_CDS_ORIGINS), allow_methods=["GET", "POST", "OPTIONS"],
                                   allow_headers=["Authorization", "Content-Type"])
        self.headers = _HEADERS + ([(b"strict-transport-security", b"max-age=31536000")] if https else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is None or host_name(host) not in self.allowed:
            await _reject_host(send)
            return
        path: str = scope["path"]
        cacheable = path.startswith(_CACHEABLE_PREFIXES)
        cds = path.startswith(_CDS_PREFIX)
        extra = self.headers if cds else [*self.headers, _SAME_ORIGIN_RESOURCE]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in extra if h[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                if not cacheable and b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        target = self.cors if cds else self.app
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await with_headers(message)

        try:
            await target(scope, receive, tracking)
        except Exception as exc:  # noqa: BLE001 - the last stop before the server's own traceback log
            # Starlette re-raises an unhandled exception after its 500 handler, and uvicorn then logs
            # it with its message, which may quote a value. Log it here without the message.
            log_unexpected(exc, scope.get("method"), scope_route(scope))
            if not started:
                await _send_json(with_headers, 500, error_body(None, "internal error"))


async def _reject_host(send: Send) -> None:
    await _send_json(send, 400, error_body("Host", "this host name is not allowed (DNS rebinding defence); "
                                                   "add it with --allowed-host"), _HEADERS)


async def _send_json(send: Send, status: int, data: dict[str, object],
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
