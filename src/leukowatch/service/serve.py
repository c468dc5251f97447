"""`leukowatch serve`: settings from the environment, overridden by flags, then uvicorn with one worker.

One worker on purpose: the JWT replay cache lives in the process, and a second worker would accept a
token the first has already seen. The access log is off: its paths carry patient ids
(`/patients/{id}`), and the project never logs patient identifiers.
"""

from __future__ import annotations

import logging
import sys

from .config import Settings


def run(db: str | None = None, host: str = "127.0.0.1", port: int = 8000, insecure_dev: bool = False,
        public_url: str | None = None, log_level: str = "info") -> int:
    import uvicorn

    from .app import INSECURE_WARNING, create_app

    settings = Settings.from_env()
    if db:
        settings.db = db
    if public_url:
        settings.public_url = public_url
    settings.insecure_dev = settings.insecure_dev or insecure_dev
    if settings.insecure_dev:
        print(INSECURE_WARNING, file=sys.stderr)
    elif not settings.cds_issuers:
        print("leukowatch: no CDS Hooks issuer configured (LEUKOWATCH_CDS_ISSUERS): every hook call will get 401",
              file=sys.stderr)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    print(f"leukowatch: serving on http://{host}:{port}/ (API docs at /docs, CDS discovery at /cds-services)",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, server_header=False,
                access_log=False)
    return 0
