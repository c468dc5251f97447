"""Clinical knowledge as data: the `*.toml` tables beside this file, each entry with its source.

Both engines read these tables: the per-patient rules (pure Python) and the population engine
(compiled to relational expressions). Nothing clinical is a literal in code, so a reviewer checks
one place and a site changes one place.

A `Knowledge` is the bundled tables, optionally with a site's overlay folder (`--knowledge DIR`,
`LEUKOWATCH_KNOWLEDGE`) merged on top, validated once (`knowledge.validate`) and frozen. Its
`version` is a hash of every byte it was built from, so an output names exactly which knowledge
judged it. `assess(request, knowledge=...)` and `screen(..., knowledge=...)` take one; the default
is the bundled tables plus the overlay the environment names.

Parsing TOML costs tens of milliseconds per start, which `leukowatch assess` cannot afford, so the
merged, validated tables are kept in the user's cache directory keyed by that combined hash: an
edited table or overlay is simply a new key, never a stale read. The start-up path imports only
what it needs (no pathlib, pickle or OpenSSL): each of those costs more than reading the cache.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from .validate import KnowledgeError, validate_overlay, validate_tables

__all__ = [
    "TABLES", "Change", "Knowledge", "KnowledgeError", "active", "default_knowledge", "derived",
    "knowledge_version", "load_knowledge", "load_table", "summary", "thaw", "use",
]

TABLES: tuple[str, ...] = (
    "profiles", "criteria", "severity", "infection", "treatment", "timeline",
    "drugs", "conditions", "advice", "symptoms", "loinc", "units", "omop", "alerts", "vocabulary",
    "temperature",
)

#: The environment variable naming a site's overlay folder (the CLI's `--knowledge DIR` sets it).
ENV_VAR = "LEUKOWATCH_KNOWLEDGE"

_HERE = os.path.dirname(os.path.realpath(__file__))


class Change(NamedTuple):
    """One value a site overlay set: where (file, key), what it was (None: added) and what it is."""

    file: str
    key: str
    old: Any
    new: Any


class Knowledge:
    """The clinical tables one judgement reads: bundled, plus a site overlay, validated and frozen.

    Immutable: the tables are read-only mappings and tuples, so no rule can change what another
    rule reads. Built by `load_knowledge`, which returns the same object for the same content.
    """

    __slots__ = ("_frozen", "_tables", "changes", "overlay", "version")

    version: str
    overlay: str | None
    changes: tuple[Change, ...]

    def __init__(self, tables: dict[str, Any], version: str, overlay: str | None,
                 changes: tuple[Change, ...]) -> None:
        set_ = object.__setattr__
        set_(self, "_tables", tables)  # plain parsed data, frozen per table on first read
        set_(self, "_frozen", {})
        set_(self, "version", version)
        set_(self, "overlay", overlay)
        set_(self, "changes", changes)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Knowledge is read-only (tried to set {name!r})")

    def __repr__(self) -> str:
        return f"Knowledge({self.version!r}, overlay={self.overlay!r})"

    def table(self, name: str) -> Mapping[str, Any]:
        """One table, read-only (mappings and tuples all the way down)."""
        try:
            return self._frozen[name]
        except KeyError:
            pass
        try:
            raw = self._tables[name]
        except KeyError:
            raise KeyError(f"unknown knowledge table {name!r}; known: {', '.join(TABLES)}") from None
        frozen = self._frozen[name] = _freeze(raw)
        return frozen

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self.table(name)

    def __iter__(self) -> Iterator[str]:
        return iter(TABLES)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for JSON and for callers that build on a table)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


# --- loading ---------------------------------------------------------------------------------

def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


@cache
def _bundled_raw() -> dict[str, bytes]:
    return {name: _read(os.path.join(_HERE, f"{name}.toml")) for name in TABLES}


def _overlay_raw(folder: str) -> dict[str, bytes]:
    """The overlay's TOML files by table name; a file that names no table is an error, not ignored."""
    try:
        names = sorted(f for f in os.listdir(folder) if f.endswith(".toml"))
    except OSError as exc:
        raise KnowledgeError(folder, "-", f"cannot read the overlay folder: {exc.strerror or exc}") from None
    raw = {}
    for file in names:
        table = file[:-len(".toml")]
        if table not in TABLES:
            raise KnowledgeError(os.path.join(folder, file), "-",
                                 f"no knowledge table is called {table!r}; known: {', '.join(TABLES)}")
        raw[table] = _read(os.path.join(folder, file))
    if not raw:
        raise KnowledgeError(folder, "-", "the overlay folder has no .toml files")
    return raw


def _sha256() -> Any:
    """SHA-256 from CPython's built-in module where there is one: `hashlib` loads OpenSSL first,
    which alone costs more than hashing the tables. Same digest either way."""
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        from hashlib import sha256
    return sha256()


def _version(bundled: dict[str, bytes], overlay: dict[str, bytes]) -> str:
    digest = _sha256()
    for name, data in bundled.items():
        digest.update(name.encode())
        digest.update(data)
    for name, data in overlay.items():  # a bundled-only knowledge keeps the hash it always had
        digest.update(b"overlay:" + name.encode())
        digest.update(data)
    return f"lw-{digest.hexdigest()[:12]}"


def _cache_file(version: str) -> str:
    """The parsed tables as marshal data (no import, loads as fast as pickle); marshal's format
    belongs to one Python version, so the file name carries it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "leukowatch", f"knowledge-{version}-{sys.implementation.cache_tag}.marshal")


def _read_cache(path: str) -> tuple[dict[str, Any], list[tuple[str, str, Any, Any]]] | None:
    try:
        with open(path, "rb") as fh:
            data = marshal.loads(fh.read())  # marshal.load reads a file in many small pieces
        tables, changes = data
        if isinstance(tables, dict) and set(tables) == set(TABLES):
            return tables, changes
    except (OSError, EOFError, ValueError, TypeError):
        pass
    return None


def _write_cache(path: str, data: Any) -> None:
    try:  # best effort: a read-only home still works, only slower
        import tempfile

        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=os.path.dirname(path), delete=False) as tmp:
            marshal.dump(data, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass


def _parse(raw: dict[str, bytes], folder: str) -> dict[str, dict[str, Any]]:
    import tomllib  # only on a cache miss: importing it costs more than reading the cache

    parsed = {}
    for name, data in raw.items():
        path = os.path.join(folder, f"{name}.toml")
        try:
            parsed[name] = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise KnowledgeError(path, "-", f"not valid TOML: {exc}") from None
    return parsed


@cache
def _load(overlay: str | None) -> Knowledge:
    bundled = _bundled_raw()
    extra = _overlay_raw(overlay) if overlay else {}
    version = _version(bundled, extra)
    path = _cache_file(version)
    hit = _read_cache(path)
    if hit is None:  # parse, merge and validate; the cache then holds only tables that passed
        from .merge import merge

        tables = _parse(bundled, _HERE)
        origins: dict[int, str] = {}
        changes: list[tuple[str, str, Any, Any]] = []
        if overlay:
            site = _parse(extra, overlay)
            for name, data in site.items():
                file = os.path.join(overlay, f"{name}.toml")
                validate_overlay(name, data, file)
                changes.extend(merge(name, tables[name], data, file, origins))
        validate_tables(tables, _HERE, origins)
        _write_cache(path, (tables, changes))
    else:
        tables, changes = hit
    return Knowledge(tables, version, overlay, tuple(Change(*c) for c in changes))


def load_knowledge(overlay: str | os.PathLike[str] | None = None) -> Knowledge:
    """The bundled tables with `overlay` (a folder of TOML files named like the tables) merged on
    top, validated; a bad table raises KnowledgeError naming the file, the key and the problem.
    The same folder content gives the same object (loaded once per process)."""
    return _load(os.path.realpath(os.fspath(overlay)) if overlay else None)


def default_knowledge() -> Knowledge:
    """The bundled tables plus the overlay `LEUKOWATCH_KNOWLEDGE` names, if any."""
    return load_knowledge(os.environ.get(ENV_VAR) or None)


# --- the knowledge this process judges with ---------------------------------------------------

_active: list[Knowledge] = []
_derived: list[Any] = []

F = TypeVar("F", bound=Callable[..., Any])


def derived(fn: F | None = None, *, maxsize: int | None = None) -> Any:
    """Cache a value worked out from the tables (an index, a sorted band list) for the active
    Knowledge: `use()` of another Knowledge empties these caches, so a derived value never
    outlives the tables it came from. `@derived` caches every call; `@derived(maxsize=N)` the last N."""
    from functools import lru_cache

    def wrap(f: F) -> F:
        cached = lru_cache(maxsize=maxsize)(f)
        _derived.append(cached)
        return cached  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap


def active() -> Knowledge:
    """The Knowledge the rules read now: the last `use()`d, else the default."""
    if not _active:
        _active.append(default_knowledge())
    return _active[0]


def use(knowledge: Knowledge | None) -> Knowledge:
    """Make `knowledge` the one the rules read (None: the default) and return it.

    One process judges with one Knowledge at a time (a service with its site's overlay, a test with
    its own): switching clears every `derived` cache, which costs a few milliseconds once.
    """
    knowledge = knowledge if knowledge is not None else default_knowledge()
    if _active and _active[0] is knowledge:
        return knowledge
    for fn in _derived:
        fn.cache_clear()
    _active[:] = [knowledge]
    return knowledge


def load_table(name: str) -> Mapping[str, Any]:
    """One table of the active Knowledge (read-only)."""
    try:  # the rules' hot path: one dict lookup once the table has been read
        return _active[0]._frozen[name]
    except (IndexError, KeyError):
        return active().table(name)


def knowledge_version() -> str:
    """The active Knowledge's content hash, so an output says exactly which knowledge produced it."""
    return active().version


def summary(knowledge: Knowledge | None = None) -> dict[str, Any]:
    """Profiles, criteria, medicines, conditions, the escalation table and the vocabulary, with their
    sources: what a reviewer audits.

    One function for `leukowatch knowledge --json`, `GET /api/knowledge` and the web page, so the
    three can never list different things.
    """
    k = knowledge or active()
    profiles = k.table("profiles")["profiles"]
    drugs = k.table("drugs")
    return thaw({
        "knowledge_version": k.version,
        "overlay": k.overlay,
        "profiles": {name: {"label": v["label"], "description": v["description"]} for name, v in profiles.items()},
        "criteria": k.table("criteria")["versions"],
        "drug_classes": drugs["classes"],
        "drugs": drugs["drugs"],
        "conditions": k.table("conditions")["conditions"],
        "alerts": k.table("alerts")["alert"],
        "vocabulary": k.table("vocabulary"),
        "site_changes": [c._asdict() for c in k.changes],
    })
