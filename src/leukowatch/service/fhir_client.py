"""Fetching what a CDS client did not prefetch, from its `fhirServer`, with its bearer token.

CDS Hooks lets a client skip prefetch; the service then reads the FHIR server itself with the
`fhirAuthorization.access_token` the call carried. Searches follow `next` links only on the same
server (the token must not travel to another host), up to a bounded number of pages.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger("leukowatch.service.fhir")

MAX_PAGES = 5


class FetchError(Exception):
    """The FHIR server could not give what was asked; the message names the query, never the data."""


async def fhir_get(client: httpx.AsyncClient, server: str, query: str, token: str | None,
                   timeout: float) -> dict[str, Any]:
    """A read (`Patient/1`) or a search (`Observation?...`) on `server`; a search returns one
    searchset Bundle with the entries of every page."""
    base = server.rstrip("/") + "/"
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url: str | None = base + query.lstrip("/")
    resource_type = query.split("?", 1)[0].split("/", 1)[0]
    merged: dict[str, Any] | None = None
    for _ in range(MAX_PAGES):
        if url is None:
            break
        try:
            resp = await client.get(url, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise FetchError(f"{resource_type}: {type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise FetchError(f"{resource_type}: fhirServer answered HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            raise FetchError(f"{resource_type}: fhirServer did not answer JSON") from None
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            return data if merged is None else merged
        if merged is None:
            merged = {"resourceType": "Bundle", "type": data.get("type", "searchset"), "entry": []}
        merged["entry"].extend(data.get("entry") or [])
        url = next((link.get("url") for link in data.get("link") or []
                    if link.get("relation") == "next" and str(link.get("url", "")).startswith(base)), None)
    log.debug("fetched %s from fhirServer", resource_type)
    return merged or {}
