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

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from . import api, cds, web
from .cds_auth import TokenVerifier
from .config import Settings
from .db import Store
from .errors import BodySizeLimit, install_error_handlers

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
        async with httpx.AsyncClient(follow_redirects=False) as client:
            app.state.http = client
            yield
        app.state.store.close()

    app = FastAPI(
        title="leukowatch", version=_version(), lifespan=lifespan,
        description="Sourced, explainable verdicts on leukopenia from white-blood-cell counts. "
                    "Decision support, not a diagnosis.",
    )
    app.state.settings = settings
    app.state.verifier = TokenVerifier(settings)
    app.state.store = Store(settings.db)
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(cds.router)
    app.include_router(web.router)
    static = resources.files("leukowatch.service") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    # CDS Hooks sandboxes call from the browser; bearer tokens, no cookies, so any origin may call.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    return app
