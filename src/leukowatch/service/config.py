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
ENV_CDS_FHIR_SERVERS = "LEUKOWATCH_CDS_FHIR_SERVERS"
ENV_CDS_TRUST = "LEUKOWATCH_CDS_TRUST"
ENV_ALLOWED_HOSTS = "LEUKOWATCH_ALLOWED_HOSTS"
ENV_OIDC_ISSUER = "LEUKOWATCH_OIDC_ISSUER"
ENV_OIDC_AUDIENCE = "LEUKOWATCH_OIDC_AUDIENCE"
ENV_OIDC_JWKS_URL = "LEUKOWATCH_OIDC_JWKS_URL"
ENV_MAX_SEGMENTS = "LEUKOWATCH_MAX_SEGMENTS"
ENV_MAX_RESULTS = "LEUKOWATCH_MAX_RESULTS"
ENV_OPEN_STATELESS = "LEUKOWATCH_OPEN_STATELESS"

DEFAULT_MAX_BODY = 1_000_000
DEFAULT_LOOKBACK_DAYS = 90
DEFAULT_FHIR_TIMEOUT_S = 5
#: Per-message parsing limits: an ORU^R01 for one blood count has tens of segments and results.
DEFAULT_MAX_SEGMENTS = 5_000
DEFAULT_MAX_RESULTS = 2_000
#: Host names a browser may use to reach the service by default (DNS rebinding defence).
LOOPBACK_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1", "[::1]")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    """How one service instance runs. Build with `Settings.from_env()` or directly in tests."""

    db: str | None = None
    #: External base URL (scheme://host[:port]) the EHR calls; the JWT `aud` must be this plus the
    #: service path. Required off loopback; when unset on loopback, the address the server socket
    #: is bound to is used (never the request's Host or forwarded headers).
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
    #: fhirServer base URLs a hook call may name, for the single configured issuer (see `cds_trust`).
    cds_fhir_servers: tuple[str, ...] = ()
    #: Per-issuer trust, for more than one issuer: {iss: {"keys": [JWK...], "jku": [url...],
    #: "fhir_servers": [url...]}}. A key verifies only tokens from its own issuer.
    cds_trust: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Host header names accepted besides the loopback names (`--allowed-host`).
    allowed_hosts: tuple[str, ...] = ()
    #: OIDC access tokens: issuer, audience, and the one JWK Set URL keys are fetched from.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    #: The stateless parts (form, /api/assess, /api/knowledge, /docs) need no token; `serve` turns
    #: this off when listening beyond loopback (LEUKOWATCH_OPEN_STATELESS=0 turns it off anywhere).
    open_stateless: bool = True
    max_segments: int = DEFAULT_MAX_SEGMENTS
    max_results: int = DEFAULT_MAX_RESULTS

    def host_names(self) -> frozenset[str]:
        """Every Host name accepted (lower case, without port): loopback, `allowed_hosts` and the
        public URL's host."""
        from urllib.parse import urlsplit

        public = urlsplit(self.public_url).hostname if self.public_url else None
        return frozenset(h.lower() for h in LOOPBACK_HOSTS + self.allowed_hosts + ((public,) if public else ()))

    def issuer_trust(self) -> dict[str, dict[str, tuple[Any, ...]]]:
        """iss -> its keys, jku URLs and fhirServer URLs. The flat settings (`cds_jwks`,
        `cds_jku_allowlist`, `cds_fhir_servers`) belong to the one issuer when exactly one is
        configured; with several issuers a key must name its issuer (`"iss"` in the JWK) or sit in
        `cds_trust`, so no key is ever shared between issuers."""
        trust: dict[str, dict[str, tuple[Any, ...]]] = {}
        issuers = tuple(dict.fromkeys(self.cds_issuers + tuple(self.cds_trust)))
        single = issuers[0] if len(issuers) == 1 else None
        for iss in issuers:
            own = self.cds_trust.get(iss, {})
            keys = [k for k in self.cds_jwks.get("keys", []) if isinstance(k, dict)
                    and (k.get("iss") == iss or (iss == single and "iss" not in k))]
            trust[iss] = {
                "keys": tuple(keys + list(own.get("keys", []))),
                "jku": tuple((self.cds_jku_allowlist if iss == single else ()) + tuple(own.get("jku", []))),
                "fhir_servers": tuple(s.rstrip("/") for s in (self.cds_fhir_servers if iss == single else ())
                                      + tuple(own.get("fhir_servers", []))),
            }
        return trust

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
            max_body_bytes=_positive(env, ENV_MAX_BODY, DEFAULT_MAX_BODY),
            cds_issuers=_csv(env.get(ENV_ISSUERS)),
            cds_jwks=jwks,
            cds_jku_allowlist=_csv(env.get(ENV_JKU_ALLOWLIST)),
            cds_lookback_days=_positive(env, ENV_LOOKBACK_DAYS, DEFAULT_LOOKBACK_DAYS),
            fhir_timeout_s=_positive(env, ENV_FHIR_TIMEOUT, DEFAULT_FHIR_TIMEOUT_S, float),
            cds_fhir_servers=_csv(env.get(ENV_CDS_FHIR_SERVERS)),
            cds_trust=_load_trust(env.get(ENV_CDS_TRUST)),
            allowed_hosts=_csv(env.get(ENV_ALLOWED_HOSTS)),
            oidc_issuer=env.get(ENV_OIDC_ISSUER) or None,
            oidc_audience=env.get(ENV_OIDC_AUDIENCE) or None,
            oidc_jwks_url=env.get(ENV_OIDC_JWKS_URL) or None,
            max_segments=_positive(env, ENV_MAX_SEGMENTS, DEFAULT_MAX_SEGMENTS),
            max_results=_positive(env, ENV_MAX_RESULTS, DEFAULT_MAX_RESULTS),
            open_stateless=_truthy(env.get(ENV_OPEN_STATELESS) or "1"),
        )


def _positive(env: dict[str, str], name: str, default: Any, cast: Any = int) -> Any:
    """A limit from the environment, named when it is wrong: 'abc' used to stop start-up with Python's
    own words, and 0 or -5 started a service that refused every request (413) or every hook."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise ValueError(f"{name}: expected a positive {'whole ' if cast is int else ''}number, got {raw!r}")
    return value


def _load_trust(path: str | None) -> dict[str, dict[str, Any]]:
    """The per-issuer trust file ({"issuers": {iss: {"keys", "jku", "fhir_servers"}}}), read at start-up."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    issuers = data.get("issuers") if isinstance(data, dict) else None
    if not isinstance(issuers, dict):
        raise ValueError(f"{path}: expected {{\"issuers\": {{ISS: {{\"keys\": [...], \"fhir_servers\": [...]}}}}}}")
    return {str(k): v for k, v in issuers.items() if isinstance(v, dict)}


def load_jwks_file(path: str) -> dict[str, Any]:
    """A JWK Set from a file; a single JWK is wrapped. Fails loudly at start-up, not per request."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "keys" in data:
        return data
    if isinstance(data, dict) and "kty" in data:
        return {"keys": [data]}
    raise ValueError(f"{path}: expected a JWK Set ({{\"keys\": [...]}}) or a single JWK")
