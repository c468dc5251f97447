"""The FastAPI application: REST, CDS Hooks and the web page, assembled from their routers.

`create_app(settings)` builds one instance; the CLI's `serve` runs it under uvicorn with one worker.
Shared resources live on `app.state`: settings, the token verifier (with its replay cache, which is
why one process serves), the lazily opened store and an httpx client for FHIR and JWKS fetches.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata, resources
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from . import api, cds, signin, web, worklist
from .auth import Authenticator, session_context
from .cds_auth import TokenVerifier
from .config import Settings
from .db import Store
from .errors import BodySizeLimit, install_error_handlers
from .security import CSP, BrowserBoundary

log = logging.getLogger("leukowatch.service")


def _version() -> str:
    try:
        return metadata.version("leukowatch")
    except metadata.PackageNotFoundError:
        return "0"

INSECURE_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!!  leukowatch: --insecure-dev is ON: CDS Hooks JWTs are NOT verified.\n"
    "!!  Anyone who can reach this port can call the hooks. Use only in a local sandbox.\n"
    + "!" * 78 + "\n"
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if settings.insecure_dev:
        log.warning("--insecure-dev: CDS Hooks JWTs are NOT verified (local sandboxes only)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from .mllp import lab_feed_running

        async with httpx.AsyncClient(follow_redirects=False) as client, lab_feed_running(app):
            app.state.http = client
            yield
        app.state.store.close()

    app = FastAPI(
        title="leukowatch", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Sourced, explainable verdicts on leukopenia from white-blood-cell counts. "
                    "Decision support, not a diagnosis.",
    )
    app.state.settings = settings
    app.state.verifier = TokenVerifier(settings)
    app.state.store = Store(settings.db)
    app.state.writer = app.state.store.writer
    app.state.auth = Authenticator(settings, app.state.writer)
    if session_context not in web.templates.context_processors:
        web.templates.context_processors.append(session_context)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(cds.router)
    app.include_router(signin.router)
    app.include_router(web.router)
    app.include_router(worklist.router)
    static = resources.files("leukowatch.service") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _mount_offline_docs(app)
    _document_auth(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    # Outermost: Host check, CORS on /cds-services* only, security headers (security.py).
    app.add_middleware(BrowserBoundary, allowed_hosts=settings.host_names(),
                       https=(settings.public_url or "").startswith("https://"))
    return app


#: Operations that need a bearer token (the OpenAPI document says so, and /docs offers "Authorize").
_TOKEN_PATHS = ("/api/patients", "/api/ingest", "/api/audit", "/api/tokens", "/api/worklist")


def _document_auth(app: FastAPI) -> None:
    """Add the bearer scheme to the OpenAPI document and mark the stored-data operations with it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "A token from `leukowatch token create` (or an OIDC access token)"}
            for path, operations in schema.get("paths", {}).items():
                if path.startswith(_TOKEN_PATHS):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_offline_docs(app: FastAPI) -> None:
    """Swagger UI from a local package: FastAPI's default page loads it from a CDN, which a hospital
    network (and this service's "works offline" promise) cannot rely on."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        if not request.app.state.settings.open_stateless:
            await api.require_role("read")(request)
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="leukowatch API",
            swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
        # A way back from the API docs to the app (the pages link here from their navigation).
        page = HTMLResponse(page.body.replace(
            b"<body>", b'<body>\n<p style="margin:.5rem 1rem;font:16px system-ui,sans-serif">'
                       b'<a href="/">&larr; back to leukowatch</a> &middot; <a href="/knowledge">Sources</a></p>', 1))
        # Swagger UI starts from an inline script: allow exactly that script by its hash.
        page.headers["Content-Security-Policy"] = CSP.replace("script-src 'self'",
                                                              "script-src 'self' " + _script_hashes(page.body))
        return page


def _script_hashes(html: bytes) -> str:
    import base64
    import hashlib
    import re

    scripts = re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts)
