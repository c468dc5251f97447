"""Clinical knowledge as data: the `*.toml` tables beside this file, each entry with its source.

Both engines read these tables: the per-patient rules (pure Python) and the population engine
(compiled to relational expressions). Nothing clinical is a literal in code, so a reviewer checks
one place and a site changes one place.

Parsing TOML costs tens of milliseconds per start, which `leukowatch assess` cannot afford, so the
parsed tables are kept in a pickle in the user's cache directory, keyed by the tables' content hash:
an edited table is simply a new key, never a stale read.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from functools import cache
from pathlib import Path
from typing import Any

TABLES: tuple[str, ...] = (
    "profiles", "criteria", "severity", "infection", "treatment", "timeline",
    "drugs", "conditions", "advice", "symptoms", "loinc", "units", "omop",
)


_HERE = Path(__file__).resolve().parent


def _read_bytes(name: str) -> bytes:
    return (_HERE / f"{name}.toml").read_bytes()


@cache
def _raw() -> dict[str, bytes]:
    return {name: _read_bytes(name) for name in TABLES}


@cache
def knowledge_version() -> str:
    """A content hash of every table, so an output says exactly which knowledge produced it."""
    digest = hashlib.sha256()
    for name, data in _raw().items():
        digest.update(name.encode())
        digest.update(data)
    return f"lw-{digest.hexdigest()[:12]}"


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "leukowatch" / f"knowledge-{knowledge_version()}.pickle"


@cache
def _all_tables() -> dict[str, dict[str, Any]]:
    path = _cache_file()
    try:
        with open(path, "rb") as fh:
            tables = pickle.load(fh)
        if set(tables) == set(TABLES):
            return tables
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    import tomllib  # only on a cache miss: importing it costs more than reading the pickle

    tables = {name: tomllib.loads(data.decode("utf-8")) for name, data in _raw().items()}
    try:  # best effort: a read-only home still works, only slower
        import tempfile

        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False) as tmp:
            pickle.dump(tables, tmp, protocol=pickle.HIGHEST_PROTOCOL)
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
