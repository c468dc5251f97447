"""`leukowatch serve`: settings from the environment, overridden by flags, then uvicorn with one worker.

One worker on purpose: the JWT replay cache, the sessions and the store's one writer live in the
process, and a second worker would accept a token the first has already seen. The access log is off:
its paths carry patient ids (`/patients/{id}`), and the project never logs patient identifiers.

At start-up it prints a sign-in link carrying a fresh admin token that lives 15 minutes in this
process only (as Jupyter does), so `make run` is still one command to a working page. Beyond
loopback it refuses to start without configured authentication (an API token in the store or an
OIDC issuer) and without `--public-url`, unless `--insecure-dev` says this is a sandbox.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .config import Settings


def run(db: str | None = None, host: str = "127.0.0.1", port: int = 8000, insecure_dev: bool = False,
        public_url: str | None = None, log_level: str = "info", lab_feed: Any = None,
        notify: tuple[str | None, str | None] = (None, None), allowed_hosts: tuple[str, ...] = ()) -> int:
    """Serve until stopped. `lab_feed` (mllp.FeedOptions) also runs the MLLP listener in this process,
    on the service's store writer; `notify` is its (webhook URL, FHIR base)."""
    import uvicorn

    from .app import INSECURE_WARNING, create_app

    try:
        settings = Settings.from_env()
    except (ValueError, OSError) as exc:  # a bad number or trust file in the environment
        print(f"leukowatch: configuration: {exc}", file=sys.stderr)
        return 2
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
    elif len(settings.cds_issuers) > 1 and any("iss" not in k for k in settings.cds_jwks.get("keys", [])):
        print("leukowatch: with several CDS Hooks issuers, a key in LEUKOWATCH_CDS_JWKS without an \"iss\" member "
              "belongs to none of them (put it in LEUKOWATCH_CDS_TRUST under its issuer)", file=sys.stderr)
    loopback = is_loopback(host)
    settings.allowed_hosts += tuple(allowed_hosts) + _own_names(host)
    settings.open_stateless = settings.open_stateless and loopback
    if not loopback and not settings.public_url and not settings.insecure_dev:
        print(f"leukowatch: refusing to listen on {host} without --public-url (the URL clients call; CDS Hooks "
              "tokens are checked against it)", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. OIDC half configured
        print(f"leukowatch: configuration: {exc}", file=sys.stderr)
        return 2
    if not loopback and not _auth_configured(app):
        if not settings.insecure_dev:
            print(f"leukowatch: refusing to listen on {host} without authentication: create a token first "
                  "(leukowatch token create --role read --name NAME) or configure an OIDC issuer; "
                  "--insecure-dev overrides this for a sandbox", file=sys.stderr)
            return 2
        print(INSECURE_WARNING.replace("CDS Hooks JWTs are NOT verified", f"listening on {host} with NO tokens"),
              file=sys.stderr)
    listeners = [("--port", host, port)] + ([("--mllp-port", lab_feed.host, lab_feed.port)] if lab_feed else [])
    for flag, on_host, on_port in listeners:  # else uvicorn logs a traceback and exits 3
        if (problem := cannot_bind(on_host, on_port)) is not None:
            print(f"error: {flag}: cannot listen on {on_host}:{on_port}: {problem}", file=sys.stderr)
            return 2
    base = (settings.public_url or f"http://{host if loopback else '127.0.0.1'}:{port}").rstrip("/")
    print(f"leukowatch: sign in at {base}/login?token={app.state.auth.startup_token()} (admin, valid 15 minutes)",
          file=sys.stderr)
    app.state.lab_feed, app.state.notify = lab_feed, notify
    if lab_feed is not None:
        print(f"leukowatch: lab feed (MLLP) on {lab_feed.host}:{lab_feed.port}", file=sys.stderr)
    print(f"leukowatch: serving on http://{host}:{port}/ (API docs at /docs, CDS discovery at /cds-services)",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level, server_header=False,
                access_log=False)
    return 0


def cannot_bind(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (in use, not an address of this machine), or None. Tried
    with SO_REUSEADDR, as uvicorn binds, so a port in TIME_WAIT still counts as free."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def is_loopback(host: str) -> bool:
    """Whether `host` (a --host value) only accepts connections from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _own_names(host: str) -> tuple[str, ...]:
    """The --host address as a Host name (unless a wildcard or loopback, which are accepted anyway);
    the public URL's host is accepted by `Settings.host_names`."""
    return () if host in ("0.0.0.0", "::", "") or is_loopback(host) else (host,)


def _auth_configured(app: Any) -> bool:
    """An OIDC issuer, or at least one active API token in the store."""
    from .auth import active_token_count

    return bool(app.state.settings.oidc_issuer) or app.state.writer.run_sync(active_token_count) > 0
