"""Service settings, read once from the environment (and overridden by `leukowatch serve` flags).

Everything an operator may need to change without editing code lives here, with the environment
variable that sets it; the README section "Configuration" lists them. Security defaults are strict: with no trusted
issuer configured every CDS Hooks call is refused, unless `insecure_dev` is switched on on purpose.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variables, in the order the README section "Configuration" lists them.
ENV_DB = "LEUKOWATCH_DB"
ENV_PUBLIC_URL = "LEUKOWATCH_PUBLIC_URL"
ENV_INSECURE_DEV = "LEUKOWATCH_INSECURE_DEV"
ENV_MAX_BODY = "LEUKOWATCH_MAX_BODY_BYTES"
ENV_ISSUERS = "LEUKOWATCH_CDS_ISSUERS"
ENV_JWKS = "LEUKOWATCH_CDS_JWKS"
ENV_JKU_ALLOWLIST = "LEUKOWATCH_CDS_JKU_ALLOWLIST"
ENV_LOOKBACK_DAYS = "LEUKOWATCH_CDS_LOOKBACK_DAYS"
ENV_FHIR_TIMEOUT = "LEUKOWATCH_FHIR_TIMEOUT_S"

DEFAULT_MAX_BODY = 1_000_000
DEFAULT_LOOKBACK_DAYS = 90
DEFAULT_FHIR_TIMEOUT_S = 5


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    """How one service instance runs. Build with `Settings.from_env()` or directly in tests."""

    db: str | None = None
    #: External base URL (scheme://host[:port]) the EHR calls; the JWT `aud` must be this plus the
    #: service path. When unset, the URL of the incoming request is used (fine without a proxy).
    public_url: str | None = None
    insecure_dev: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    #: `iss` values allowed to call the CDS services.
    cds_issuers: tuple[str, ...] = ()
    #: Trusted public keys configured out of band (a JWK Set: {"keys": [...]}).
    cds_jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    #: JWK Set URLs a token's `jku` header may point at; anything else is refused.
    cds_jku_allowlist: tuple[str, ...] = ()
    cds_lookback_days: int = DEFAULT_LOOKBACK_DAYS
    fhir_timeout_s: float = DEFAULT_FHIR_TIMEOUT_S

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        jwks: dict[str, Any] = {"keys": []}
        if env.get(ENV_JWKS):
            jwks = load_jwks_file(env[ENV_JWKS])
        return cls(
            db=env.get(ENV_DB) or None,
            public_url=env.get(ENV_PUBLIC_URL) or None,
            insecure_dev=_truthy(env.get(ENV_INSECURE_DEV)),
            max_body_bytes=int(env.get(ENV_MAX_BODY) or DEFAULT_MAX_BODY),
            cds_issuers=_csv(env.get(ENV_ISSUERS)),
            cds_jwks=jwks,
            cds_jku_allowlist=_csv(env.get(ENV_JKU_ALLOWLIST)),
            cds_lookback_days=int(env.get(ENV_LOOKBACK_DAYS) or DEFAULT_LOOKBACK_DAYS),
            fhir_timeout_s=float(env.get(ENV_FHIR_TIMEOUT) or DEFAULT_FHIR_TIMEOUT_S),
        )


def load_jwks_file(path: str) -> dict[str, Any]:
    """A JWK Set from a file; a single JWK is wrapped. Fails loudly at start-up, not per request."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "keys" in data:
        return data
    if isinstance(data, dict) and "kty" in data:
        return {"keys": [data]}
    raise ValueError(f"{path}: expected a JWK Set ({{\"keys\": [...]}}) or a single JWK")
