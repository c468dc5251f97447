"""CDS Hooks client authentication: verify the EHR's JWT as CDS Hooks 2.0 § Trusting CDS Clients says.

A hook call carries `Authorization: Bearer <JWT>`. We accept it only when all of these hold:
- the header's `alg` is asymmetric (RS384 or ES384, the two the spec names); `none` and HMAC are
  refused before any key is looked at, which closes the classic algorithm-confusion attacks;
- `iss` is on the allowlist, and the signature verifies against a key configured out of band for
  that issuer or one from the JWK Set at the header's `jku`, which must be on that issuer's own
  allowlist (we never fetch a URL a token chose freely). A key belongs to one issuer: a key
  trusted for issuer A never verifies a token that claims issuer B;
- `aud` equals the configured public base URL plus the service path (never derived from the
  request's Host or forwarded headers); `exp`, `iat` and `jti` are present, `exp` is in the
  future, and the lifetime `exp - iat` is at most `MAX_LIFETIME_S` plus leeway (SMART Backend
  Services caps client assertions at five minutes);
- `jti` has not been seen before from that issuer (a replay cache kept until the token expires).
Any failure is 401 with a reason that describes the token, never the patient.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import jwt

from .config import Settings
from .errors import ServiceError
from .oidc import asymmetric_header

log = logging.getLogger("leukowatch.service.cds")

ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS384", "ES384")
_KTY_FOR_ALG = {"RS384": "RSA", "ES384": "EC"}
#: Clock skew tolerated on exp/iat, seconds.
LEEWAY_S = 30
#: How long a fetched JWK Set is trusted before it is fetched again, seconds.
JWKS_TTL_S = 300
#: Longest accepted token lifetime (exp - iat), seconds, before leeway.
MAX_LIFETIME_S = 300


def _unauthorized(problem: str) -> ServiceError:
    return ServiceError(401, "Authorization", problem, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class ReplayCache:
    """`(iss, jti)` pairs seen, each kept until its token expires (so memory stays bounded by traffic)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._next_prune = 0.0

    def check_and_add(self, iss: str, jti: str, exp: float, now: float) -> bool:
        """True when new (and now remembered); False when this token was used before."""
        if now >= self._next_prune:
            self._seen = {k: v for k, v in self._seen.items() if v + LEEWAY_S > now}
            self._next_prune = now + LEEWAY_S
        key = (iss, jti)
        if key in self._seen:
            return False
        self._seen[key] = exp
        return True


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trust = settings.issuer_trust()
        self.replay = ReplayCache()
        self._jwks_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def _jku_keys(self, iss: str, jku: str, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        if jku not in self.trust[iss]["jku"]:
            raise _unauthorized("jku is not on this issuer's allowlist")
        cached = self._jwks_cache.get(jku)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        try:
            resp = await client.get(jku, timeout=self.settings.fhir_timeout_s)
            resp.raise_for_status()
            keys = resp.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            log.warning("could not fetch the JWK Set at an allow-listed jku")
            raise _unauthorized("could not fetch the JWK Set named by jku") from None
        if not isinstance(keys, list):
            raise _unauthorized("the JWK Set named by jku has no key list")
        self._jwks_cache[jku] = (now + JWKS_TTL_S, keys)
        return keys

    async def verify(self, authorization: str | None, audience: str, client: httpx.AsyncClient) -> dict[str, Any]:
        """The verified claims, or ServiceError(401). With `insecure_dev` on, nothing is checked."""
        if self.settings.insecure_dev:
            return {}
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("missing Bearer token")
        token = authorization[len("bearer "):].strip()
        header = asymmetric_header(token, ALLOWED_ALGORITHMS, _unauthorized)
        alg = header["alg"]
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _unauthorized("malformed JWT") from None
        iss = unverified.get("iss")
        if not isinstance(iss, str) or iss not in self.trust:
            raise _unauthorized("iss is not on the allowlist")
        keys = list(self.trust[iss]["keys"])  # this issuer's keys only
        if header.get("jku"):
            keys += await self._jku_keys(iss, str(header["jku"]), client)
        kid = header.get("kid")
        candidates = [k for k in keys if isinstance(k, dict) and k.get("kty") == _KTY_FOR_ALG[alg]
                      and (kid is None or k.get("kid") == kid)]
        if not candidates:
            raise _unauthorized("no trusted key matches the token's kid and alg")
        claims: dict[str, Any] | None = None
        for jwk in candidates:
            try:
                key = jwt.PyJWK(jwk, algorithm=alg).key
                claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=iss, leeway=LEEWAY_S,
                                    options={"require": ["iss", "aud", "exp", "iat", "jti"]})
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise _unauthorized("token expired") from None
            except jwt.InvalidAudienceError:
                raise _unauthorized("aud does not match the called service URL") from None
            except jwt.MissingRequiredClaimError as exc:
                raise _unauthorized(f"token lacks the {exc.claim!r} claim") from None
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise _unauthorized(f"invalid token ({type(exc).__name__})") from None
        if claims is None:
            raise _unauthorized("signature does not verify against any key trusted for this issuer")
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            raise _unauthorized("exp and iat must be numbers") from None
        if lifetime > MAX_LIFETIME_S + LEEWAY_S:
            raise _unauthorized(f"token lifetime (exp - iat) exceeds {MAX_LIFETIME_S} s")
        if not self.replay.check_and_add(iss, str(claims["jti"]), float(claims["exp"]), time.time()):
            raise _unauthorized("jti already used (replayed token)")
        return claims
