"""Clinical knowledge as data: the `*.toml` tables beside this file, each entry with its source.

Both engines read these tables: the per-patient rules (pure Python) and the population engine
(compiled to relational expressions). Nothing clinical is a literal in code, so a reviewer checks
one place and a site changes one place.

Parsing TOML costs tens of milliseconds per start, which `leukowatch assess` cannot afford, so the
parsed tables are kept in the user's cache directory, keyed by the tables' content hash: an edited
table is simply a new key, never a stale read. The start-up path imports only what it needs (no
pathlib, pickle or OpenSSL): each of those costs more than reading the cache.
"""

from __future__ import annotations

import marshal
import os
import sys
from functools import cache
from typing import Any

TABLES: tuple[str, ...] = (
    "profiles", "criteria", "severity", "infection", "treatment", "timeline",
    "drugs", "conditions", "advice", "symptoms", "loinc", "units", "omop", "alerts",
)


_HERE = os.path.dirname(os.path.realpath(__file__))


def _read_bytes(name: str) -> bytes:
    with open(os.path.join(_HERE, f"{name}.toml"), "rb") as fh:
        return fh.read()


@cache
def _raw() -> dict[str, bytes]:
    return {name: _read_bytes(name) for name in TABLES}


def _sha256() -> Any:
    """SHA-256 from CPython's built-in module where there is one: `hashlib` loads OpenSSL first,
    which alone costs more than hashing the tables. Same digest either way."""
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        from hashlib import sha256
    return sha256()


@cache
def knowledge_version() -> str:
    """A content hash of every table, so an output says exactly which knowledge produced it."""
    digest = _sha256()
    for name, data in _raw().items():
        digest.update(name.encode())
        digest.update(data)
    return f"lw-{digest.hexdigest()[:12]}"


def _cache_file() -> str:
    """The parsed tables as marshal data (no import, loads as fast as pickle); marshal's format
    belongs to one Python version, so the file name carries it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    name = f"knowledge-{knowledge_version()}-{sys.implementation.cache_tag}.marshal"
    return os.path.join(base, "leukowatch", name)


@cache
def _all_tables() -> dict[str, dict[str, Any]]:
    path = _cache_file()
    try:
        with open(path, "rb") as fh:
            tables = marshal.loads(fh.read())  # marshal.load reads a file in many small pieces
        if isinstance(tables, dict) and set(tables) == set(TABLES):
            return tables
    except (OSError, EOFError, ValueError, TypeError):
        pass
    import tomllib  # only on a cache miss: importing it costs more than reading the cache

    tables = {name: tomllib.loads(data.decode("utf-8")) for name, data in _raw().items()}
    try:  # best effort: a read-only home still works, only slower
        import tempfile

        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=os.path.dirname(path), delete=False) as tmp:
            marshal.dump(tables, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass
    return tables


def load_table(name: str) -> dict[str, Any]:
    """One parsed knowledge table (read-only: callers must not mutate it)."""
    try:
        return _all_tables()[name]  # holds exactly TABLES
    except KeyError:
        raise KeyError(f"unknown knowledge table {name!r}; known: {', '.join(TABLES)}") from None


def summary() -> dict[str, Any]:
    """Profiles, criteria, medicines and conditions with their sources: what a reviewer audits.

    One function for `leukowatch knowledge --json`, `GET /api/knowledge` and the web page, so the
    three can never list different things.
    """
    profiles = load_table("profiles")["profiles"]
    drugs = load_table("drugs")
    return {
        "knowledge_version": knowledge_version(),
        "profiles": {k: {"label": v["label"], "description": v["description"]} for k, v in profiles.items()},
        "criteria": load_table("criteria")["versions"],
        "drug_classes": drugs["classes"],
        "drugs": drugs["drugs"],
        "conditions": load_table("conditions")["conditions"],
    }
