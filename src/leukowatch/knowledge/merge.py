"""A site overlay merged onto a bundled table, with the list of what it changed.

Tables merge key by key. A list of rows ([[ranges]], [[drugs]], [[alert]]...) merges row by row: an
overlay row whose identity keys (below) equal a bundled row's changes that row's fields; any other
row is added. Added reference-range rows go *first*, because the first matching range row wins
(profiles.toml): a site's local range then applies instead of the bundled one. Everything else
a site adds is appended.
"""

from __future__ import annotations

from typing import Any

#: The keys that say which bundled row an overlay row means, per list (by its key path, `*` = any key).
IDENTITY: dict[tuple[str, ...], tuple[str, ...]] = {
    ("profiles", "profiles", "*", "ranges"): ("analyte", "sex", "age_min", "age_max", "percent"),
    ("criteria", "rows"): ("version", "analyte", "direction", "grade", "min_age_days", "max_age_days",
                           "min_age_years"),
    ("severity", "neutropenia"): ("word", "below"),
    ("alerts", "alert"): ("code", "variant"),
    ("drugs", "drugs"): ("generic",),
    ("conditions", "conditions"): ("name",),
    ("symptoms", "symptoms"): ("key",),
    ("advice", "*"): ("key",),
    ("treatment", "monitoring", "*", "*"): ("below",),
    ("infection", "mascc", "items"): ("key",),
    ("infection", "cisne", "items"): ("key",),
}
#: Lists where the first matching row wins: a site's added row goes before the bundled ones.
FIRST_MATCH_WINS: frozenset[tuple[str, ...]] = frozenset({("profiles", "profiles", "*", "ranges")})


def _pattern(path: tuple[str, ...], table: dict[tuple[str, ...], Any]) -> tuple[str, ...] | None:
    for pattern in table:
        if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path, strict=True)):
            return pattern
    return None


def row_name(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A row named by its identity keys ("analyte=wbc, sex=male"), as --diff and errors show it."""
    return ", ".join(f"{k}={row[k]}" for k in keys if k in row) or "row"


def row_key(path: tuple[str, ...], where: str, i: int, row: Any) -> str:
    """`where[analyte=wbc, sex=male]` for a row of a list with identity keys, else `where[i]`."""
    pattern = _pattern(path, IDENTITY)
    name = row_name(row, IDENTITY[pattern]) if pattern and isinstance(row, dict) else ""
    return f"{where}[{name or i}]"


def merge(name: str, base: dict[str, Any], site: dict[str, Any], file: str,
          origins: dict[int, str]) -> list[tuple[str, str, Any, Any]]:
    """Merge `site` into `base` in place; returns (file, key, old, new) per value set (old None: added).
    `origins` records, per table the overlay touched, the overlay file (validation names it)."""
    changes: list[tuple[str, str, Any, Any]] = []
    _merge_dict((name,), "", base, site, file, origins, changes)
    return changes


def _merge_dict(path: tuple[str, ...], where: str, base: dict[str, Any], site: dict[str, Any], file: str,
                origins: dict[int, str], changes: list[tuple[str, str, Any, Any]]) -> None:
    origins[id(base)] = file
    for key, new in site.items():
        at = f"{where}.{key}" if where else key
        old = base.get(key)
        if isinstance(new, dict) and isinstance(old, dict):
            _merge_dict((*path, key), at, old, new, file, origins, changes)
        elif isinstance(new, list) and isinstance(old, list) and new and all(isinstance(r, dict) for r in new):
            _merge_rows((*path, key), at, old, new, file, origins, changes)
        elif old != new:
            base[key] = new
            if isinstance(new, dict):
                _mark(new, file, origins)
            changes.append((file, at, old, new))


def _mark(node: Any, file: str, origins: dict[int, str]) -> None:
    if isinstance(node, dict):
        origins[id(node)] = file
        for v in node.values():
            _mark(v, file, origins)
    elif isinstance(node, list):
        for v in node:
            _mark(v, file, origins)


def _merge_rows(path: tuple[str, ...], where: str, base: list[Any], site: list[dict[str, Any]], file: str,
                origins: dict[int, str], changes: list[tuple[str, str, Any, Any]]) -> None:
    pattern = _pattern(path, IDENTITY)
    keys = IDENTITY[pattern] if pattern else ()
    added = []
    for row in site:
        ident = tuple(row.get(k) for k in keys)
        match = next((b for b in base if keys and isinstance(b, dict) and tuple(b.get(k) for k in keys) == ident),
                     None)
        if match is None:
            _mark(row, file, origins)
            added.append(row)
            changes.append((file, f"{where}[{row_name(row, keys)}]", None, row))
        else:
            _merge_dict(path, f"{where}[{row_name(match, keys)}]", match, row, file, origins, changes)
    if pattern in FIRST_MATCH_WINS:
        base[:0] = added
    else:
        base.extend(added)
