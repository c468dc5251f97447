"""OAuth2/OIDC access tokens from an enterprise identity provider, mapped to leukowatch roles.

Optional: on when `LEUKOWATCH_OIDC_ISSUER` is set (with `..._AUDIENCE` and `..._JWKS_URL`). A JWT
bearer token is accepted when its signature verifies with a key from the one configured JWK Set URL
(never a URL named by the token or by discovery), `iss` and `aud` are the configured ones, and it
has not expired. Only asymmetric algorithms: an HMAC token could be forged with a public key.

Scopes map to roles the SMART App Launch v2 way (v1 `.read`/`.write` understood too):
`user/Observation.rs` (any context, `Observation` or `*`, with `r`) -> read;
`system/Observation.c` (with `c`) -> ingest; `system/*.cruds` (every permission on every type) -> admin.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt

from .audit import Actor
from .errors import ServiceError

if TYPE_CHECKING:
    import httpx

    from .config import Settings

log = logging.getLogger("leukowatch.service.auth")

ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384")
LEEWAY_S = 30
JWKS_TTL_S = 300
#: A token naming an unknown kid may trigger a JWK Set refresh at most this often (key rotation).
REFRESH_MIN_S = 30

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Za-z]+)\.(\*|read|write|[cruds]+)(\?.*)?$")


def roles_from_scopes(scopes: list[str]) -> set[str]:
    """The leukowatch roles a list of SMART scopes grants."""
    roles: set[str] = set()
    for scope in scopes:
        m = _SCOPE.match(scope)
        if not m:
            continue
        resource, perms = m.group(2), m.group(3)
        perms = {"*": "cruds", "read": "rs", "write": "cud"}.get(perms, perms)
        if resource == "*" and set("cruds") <= set(perms):
            roles.add("admin")
        if resource in ("Observation", "*"):
            if "r" in perms:
                roles.add("read")
            if "c" in perms:
                roles.add("ingest")
    return roles


def _unauthorized(problem: str) -> ServiceError:
    return ServiceError(401, "Authorization", problem,
                        headers={"WWW-Authenticate": 'Bearer realm="leukowatch", error="invalid_token"'})


def asymmetric_header(token: str, allowed: tuple[str, ...], unauthorized: Callable[[str], ServiceError]
                      ) -> dict[str, Any]:
    """The JWT's header when its `alg` is one of `allowed` (asymmetric ones): `none` and HMAC are
    refused before any key is looked at, which closes the algorithm-confusion attacks."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise unauthorized("malformed JWT") from None
    if header.get("alg") not in allowed:
        raise unauthorized(f"alg {header.get('alg')!r} not accepted (use {' or '.join(allowed)})")
    return header


class OidcVerifier:
    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_audience and settings.oidc_jwks_url):
            raise ValueError("OIDC needs an issuer, an audience and a JWK Set URL")
        self.issuer, self.audience, self.jwks_url = settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url
        self.timeout = settings.fhir_timeout_s
        self._keys: list[dict[str, Any]] = []
        self._fetched = 0.0

    async def _jwks(self, client: httpx.AsyncClient | None, refresh: bool) -> list[dict[str, Any]]:
        now = time.monotonic()
        stale = now - self._fetched > JWKS_TTL_S or (refresh and now - self._fetched > REFRESH_MIN_S)
        if (stale or not self._keys) and client is not None:
            try:
                resp = await client.get(self.jwks_url, timeout=self.timeout)
                resp.raise_for_status()
                keys = resp.json().get("keys")
            except Exception:  # noqa: BLE001 - any failure means no keys; the token is refused
                log.warning("could not fetch the OIDC JWK Set")
                keys = None
            if isinstance(keys, list):
                self._keys, self._fetched = [k for k in keys if isinstance(k, dict)], now
        return self._keys

    async def actor(self, token: str, client: httpx.AsyncClient | None) -> Actor:
        """The Actor (`sub`, roles from scopes, kind "jwt"), or ServiceError(401)."""
        header = asymmetric_header(token, ALGORITHMS, _unauthorized)
        alg, kid = header["alg"], header.get("kid")
        keys = [k for k in await self._jwks(client, refresh=False) if kid is None or k.get("kid") == kid]
        if not keys:
            keys = [k for k in await self._jwks(client, refresh=True) if kid is None or k.get("kid") == kid]
        claims: dict[str, Any] | None = None
        for jwk in keys:
            try:
                claims = jwt.decode(token, jwt.PyJWK(jwk, algorithm=alg).key, algorithms=[alg], audience=self.audience,
                                    issuer=self.issuer, leeway=LEEWAY_S, options={"require": ["iss", "aud", "exp", "sub"]})
                break
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise _unauthorized(f"invalid token ({type(exc).__name__})") from None
        if claims is None:
            raise _unauthorized("signature does not verify against the issuer's keys")
        raw = claims.get("scope", claims.get("scp", ""))
        scopes = raw.split() if isinstance(raw, str) else [s for s in raw if isinstance(s, str)] if isinstance(raw, list) else []
        roles = roles_from_scopes(scopes)
        role = "admin" if "admin" in roles else "+".join(sorted(roles))
        if not role:
            raise ServiceError(403, "Authorization", "the token's scopes grant no leukowatch role")
        return Actor(str(claims["sub"])[:200], role, "jwt")
