"""Clinical knowledge as data: the `*.toml` tables beside this file, each entry with its source.

Both engines read these tables: the per-patient rules (pure Python) and the population engine
(compiled to relational expressions). Nothing clinical is a literal in code, so a reviewer checks
one place and a site changes one place.
"""

from __future__ import annotations

import hashlib
import tomllib
from functools import cache
from importlib import resources
from typing import Any

TABLES: tuple[str, ...] = (
    "profiles", "criteria", "severity", "infection", "treatment", "timeline",
    "drugs", "conditions", "advice", "symptoms", "loinc", "units",
)


def _read_bytes(name: str) -> bytes:
    return resources.files(__package__).joinpath(f"{name}.toml").read_bytes()


@cache
def load_table(name: str) -> dict[str, Any]:
    """Parse one knowledge table (cached: the tables are read-only for the life of the process)."""
    if name not in TABLES:
        raise KeyError(f"unknown knowledge table {name!r}; known: {', '.join(TABLES)}")
    return tomllib.loads(_read_bytes(name).decode("utf-8"))


@cache
def knowledge_version() -> str:
    """A content hash of every table, so an output says exactly which knowledge produced it."""
    digest = hashlib.sha256()
    for name in TABLES:
        digest.update(name.encode())
        digest.update(_read_bytes(name))
    return f"lw-{digest.hexdigest()[:12]}"
