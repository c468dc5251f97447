"""Checks a knowledge table must pass before any rule reads it: required keys, types, a source for
every entry, low < high, grades ordered.

Run once per content (the cache holds only tables that passed), on the bundled tables and on every
site overlay merged onto them, so a site's typo fails at start-up with the file, the key and the
problem, instead of grading a patient against a range that reads the wrong way round (as admiral
checks its criteria table's columns before grading).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from .merge import row_key


class KnowledgeError(ValueError):
    """A knowledge table that cannot be used: which file, which key, what is wrong."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


#: Keys that hold a clinical sentence: like a number, each needs a source.
_ADVICE_KEYS = frozenset({"text", "clinician", "patient", "action", "confirm", "why"})
_LEVELS = frozenset({"critical", "warning", "info"})
_SEXES = frozenset({"male", "female", "unknown"})
_DIRECTIONS = frozenset({"low", "high"})


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class _Check:
    """One table's checks; `fail` names the file the offending entry came from (the overlay's when
    the overlay set it, else the bundled table)."""

    def __init__(self, name: str, table: dict[str, Any], folder: str, origins: dict[int, str]) -> None:
        self.name, self.table, self.origins = name, table, origins
        self.default_file = os.path.join(folder, f"{name}.toml")

    def fail(self, node: Any, key: str, problem: str) -> KnowledgeError:
        return KnowledgeError(self.origins.get(id(node), self.default_file), key, problem)

    def need(self, node: dict[str, Any], key: str, where: str, test: Callable[[Any], bool], what: str) -> Any:
        if key not in node:
            raise self.fail(node, f"{where}.{key}", f"missing (required: {what})")
        value = node[key]
        if not test(value):
            raise self.fail(node, f"{where}.{key}", f"must be {what}, not {value!r}")
        return value

    def text(self, node: dict[str, Any], key: str, where: str) -> str:
        return self.need(node, key, where, lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")

    def maybe(self, node: dict[str, Any], key: str, where: str, test: Callable[[Any], bool], what: str) -> None:
        if key in node:
            self.need(node, key, where, test, what)


#: The keys a row may have: a misspelt key ("lwo = 4.0") would otherwise be carried along unread.
_ROW_KEYS: dict[str, frozenset[str]] = {
    "ranges": frozenset({"analyte", "sex", "age_min", "age_max", "low", "high", "percent", "source"}),
    "criteria": frozenset({"version", "term", "analyte", "direction", "grade", "below", "above", "at_least",
                           "at_most", "inclusive", "min_age_days", "max_age_days", "min_age_years", "source"}),
    "versions": frozenset({"label", "source", "grades_within_range"}),
    "alerts": frozenset({"code", "variant", "level", "trigger", "clinician", "patient", "source", "verdict",
                         "patient_superseded_by"}),
    "drugs": frozenset({"generic", "names", "brands", "classes", "risk", "chemotherapy", "dual_use", "monitoring",
                        "why", "source"}),
}


def _known(c: _Check, row: dict[str, Any], at: str, kind: str) -> None:
    for key in row:
        # alert rows also carry their numeric triggers (anc_below, wbc_above, wbc_at_most...)
        if key not in _ROW_KEYS[kind] and not (kind == "alerts" and key.endswith(("_below", "_above", "_at_most"))):
            raise c.fail(row, f"{at}.{key}", f"unknown key; known: {', '.join(sorted(_ROW_KEYS[kind]))}")


def _walk(node: Any, where: str, sourced: bool, path: tuple[str, ...]) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """Every table in a tree with its key path (rows named by their identity keys, as --diff names
    them) and whether it or an enclosing table has a source."""
    if isinstance(node, dict):
        sourced = sourced or any(k == "source" or k.endswith("_source") for k in node)
        yield node, where, sourced
        for k, v in node.items():
            yield from _walk(v, f"{where}.{k}" if where else str(k), sourced, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, row_key(path, where, i, v), sourced, path)


def _sources(c: _Check) -> None:
    """Every entry that holds a number or a sentence is sourced, by itself or by an enclosing table;
    every `source` is a non-empty string."""
    for node, where, sourced in _walk(c.table, "", False, (c.name,)):
        if "source" in node:
            c.text(node, "source", where or "(top)")
        holds_value = any(_is_num(v) or k in _ADVICE_KEYS for k, v in node.items())
        if holds_value and not sourced:
            raise c.fail(node, where or "(top)", "no source: give `source` on this entry or the table enclosing it")


def _profiles(c: _Check) -> None:
    t = c.table
    profiles = c.need(t, "profiles", "", lambda v: isinstance(v, dict) and v, "a table of profiles")
    c.need(t, "default", "", lambda v: v in profiles, f"one of {', '.join(profiles)}")
    c.need(t, "adult_age_years", "", _is_num, "a number")
    for name, spec in profiles.items():
        where = f"profiles.{name}"
        c.text(spec, "label", where)
        c.maybe(spec, "extends", where, lambda v: v in profiles, f"one of {', '.join(profiles)}")
        rows = c.need(spec, "ranges", where, lambda v: isinstance(v, list), "a list of [[ranges]]")
        for i, row in enumerate(rows):
            at = row_key(("profiles", "profiles", name, "ranges"), f"{where}.ranges", i, row)
            _known(c, row, at, "ranges")
            c.text(row, "analyte", at)
            c.text(row, "source", at)
            c.maybe(row, "sex", at, lambda v: v in _SEXES, "male, female or unknown")
            c.maybe(row, "percent", at, lambda v: isinstance(v, bool), "true or false")
            for key in ("low", "high", "age_min", "age_max"):
                c.maybe(row, key, at, _is_num, "a number")
            if "low" not in row and "high" not in row:
                raise c.fail(row, at, "neither `low` nor `high`")
            if "low" in row and "high" in row and not row["low"] < row["high"]:
                raise c.fail(row, f"{at}.low", f"low {row['low']} must be below high {row['high']}")
            if "age_min" in row and "age_max" in row and not row["age_min"] < row["age_max"]:
                raise c.fail(row, f"{at}.age_min", f"age_min {row['age_min']} must be below age_max {row['age_max']}")


def _cut(v: Any) -> bool:
    return _is_num(v) or v in ("LLN", "ULN")


def _criteria(c: _Check) -> None:
    t = c.table
    versions = c.need(t, "versions", "", lambda v: isinstance(v, dict) and v, "a table of versions")
    c.need(t, "default", "", lambda v: v in versions, f"one of {', '.join(versions)}")
    for name, spec in versions.items():
        _known(c, spec, f"versions.{name}", "versions")
        c.text(spec, "label", f"versions.{name}")
        c.text(spec, "source", f"versions.{name}")  # the rows of a version are sourced by it
        # a version's absolute cut-offs also grade counts within the range (rules.findings): a flag, so that
        # "grades_within_range = 1" or a quoted "false" is refused instead of read as true
        c.maybe(spec, "grades_within_range", f"versions.{name}", lambda v: isinstance(v, bool), "true or false")
    groups: dict[tuple[Any, ...], list[tuple[int, Any, dict[str, Any], str]]] = {}
    for i, row in enumerate(c.need(t, "rows", "", lambda v: isinstance(v, list), "a list of [[rows]]")):
        at = row_key(("criteria", "rows"), "rows", i, row)
        _known(c, row, at, "criteria")
        c.need(row, "version", at, lambda v: v in versions, f"one of {', '.join(versions)}")
        c.text(row, "analyte", at)
        direction = c.need(row, "direction", at, lambda v: v in _DIRECTIONS, "low or high")
        grade = c.need(row, "grade", at, lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5,
                       "a whole number 1-5")
        cut_key = "below" if direction == "low" else "above"
        cut = c.need(row, cut_key, at, _cut, "a number, LLN or ULN")
        for key in ("at_least", "at_most"):
            c.maybe(row, key, at, _cut, "a number, LLN or ULN")
        band = tuple(row.get(k) for k in ("min_age_days", "max_age_days", "min_age_years"))
        groups.setdefault((row["version"], row["analyte"], direction, band), []).append((grade, cut, row, at))
    for (_, _, direction, _), rows in groups.items():  # a worse grade needs a more extreme cut-off
        numeric = sorted((g, cut, row, at) for g, cut, row, at in rows if _is_num(cut))
        for (g1, cut1, row1, at1), (g2, cut2, row2, at2) in zip(numeric, numeric[1:], strict=False):
            word = "below" if direction == "low" else "above"
            if g1 == g2 or (cut2 >= cut1 if direction == "low" else cut2 <= cut1):
                row, at = (row1, at1) if id(row1) in c.origins and id(row2) not in c.origins else (row2, at2)
                raise c.fail(row, at, f"grades out of order: grade {g2} ({word} {cut2}) must be worse than "
                                      f"grade {g1} ({word} {cut1})")


def _ascending(c: _Check, rows: list[dict[str, Any]], where: str) -> None:
    """Bands checked from the lowest up (`below` strict): each cut-off above the one before."""
    last = None
    for i, row in enumerate(rows):
        cut = c.need(row, "below", f"{where}[{i}]", lambda v: _cut(v) or v == "inf", "a number, LLN or inf")
        if _is_num(cut):
            if last is not None and cut <= last:
                raise c.fail(row, f"{where}[{i}].below", f"bands out of order: {cut} must be above {last}")
            last = cut


def _severity(c: _Check) -> None:
    rows = c.need(c.table, "neutropenia", "", lambda v: isinstance(v, list), "a list of [[neutropenia]]")
    for i, row in enumerate(rows):
        c.text(row, "word", f"neutropenia[{i}]")
    _ascending(c, rows, "neutropenia")


def _alerts(c: _Check) -> None:
    seen = set()
    for i, row in enumerate(c.need(c.table, "alert", "", lambda v: isinstance(v, list), "a list of [[alert]]")):
        at = row_key(("alerts", "alert"), "alert", i, row)
        _known(c, row, at, "alerts")
        for key in ("code", "variant", "trigger", "clinician", "patient", "source"):
            c.text(row, key, at)
        c.need(row, "level", at, lambda v: v in _LEVELS, "critical, warning or info")
        if (row["code"], row["variant"]) in seen:
            raise c.fail(row, at, "listed twice")
        seen.add((row["code"], row["variant"]))
    where = c.need(c.table, "where", "", lambda v: isinstance(v, dict), "a table")
    c.text(where, "chemotherapy", "where")
    c.text(where, "default", "where")


def _drugs(c: _Check) -> None:
    classes = c.need(c.table, "classes", "", lambda v: isinstance(v, dict), "a table of classes")
    for i, row in enumerate(c.need(c.table, "drugs", "", lambda v: isinstance(v, list), "a list of [[drugs]]")):
        at = row_key(("drugs", "drugs"), "drugs", i, row)
        _known(c, row, at, "drugs")
        c.text(row, "generic", at)
        c.text(row, "source", at)
        for key in ("names", "brands", "classes"):
            c.maybe(row, key, at, lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                    "a list of strings")
        for name in row.get("classes", []):
            if name not in classes:
                raise c.fail(row, f"{at}.classes", f"unknown class {name!r}; known: {', '.join(classes)}")
        for key in ("chemotherapy", "dual_use"):
            c.maybe(row, key, at, lambda v: isinstance(v, bool), "true or false")


def _treatment(c: _Check) -> None:
    hold = c.need(c.table, "chemotherapy_hold", "", lambda v: isinstance(v, dict), "a table")
    for key in hold.get("default", {}):
        c.need(hold["default"], key, "chemotherapy_hold.default", _is_num, "a number")
    for name, spec in hold.get("regimens", {}).items():
        for key in spec:
            if key != "source":
                c.need(spec, key, f"chemotherapy_hold.regimens.{name}", _is_num, "a number")
    for drug, spec in c.table.get("monitoring", {}).items():
        for key, rows in spec.items():
            if isinstance(rows, list):
                _ascending(c, rows, f"monitoring.{drug}.{key}")
                for i, row in enumerate(rows):
                    c.need(row, "level", f"monitoring.{drug}.{key}[{i}]", lambda v: v in _LEVELS,
                           "critical, warning or info")


def _vocabulary(c: _Check) -> None:
    analytes = c.need(c.table, "analytes", "", lambda v: isinstance(v, dict), "a table of analytes")
    for name, spec in analytes.items():
        for key in ("label", "name", "plain", "unit"):
            c.text(spec, key, f"analytes.{name}")
    for code, spec in c.need(c.table, "findings", "", lambda v: isinstance(v, dict), "a table of findings").items():
        at = f"findings.{code}"
        c.need(spec, "analyte", at, lambda v: v in analytes or v == "all", "an analyte of [analytes] or all")
        c.need(spec, "direction", at, lambda v: v in _DIRECTIONS, "low or high")
        for key in ("lineage", "label", "name", "plain"):
            c.text(spec, key, at)
        for key in ("informational", "graded"):
            c.maybe(spec, key, at, lambda v: isinstance(v, bool), "true or false")


def _numbers(c: _Check, section: str) -> None:
    """Every value of a section of thresholds is a number (strings only as `source`/notes/words)."""
    for key, v in c.table.get(section, {}).items():
        if isinstance(v, bool) or (not _is_num(v) and not isinstance(v, str | list | dict)):
            raise c.fail(c.table[section], f"{section}.{key}", f"must be a number, not {v!r}")


def _temperature(c: _Check) -> None:
    """LOINC codes named, and each unit spelling in exactly one scale: a spelling listed as both
    Celsius and Fahrenheit would make 100 read as 100 °C or 37.8 °C depending on dictionary order."""
    codes = c.need(c.table, "codes", "", lambda v: isinstance(v, dict) and v, "a table of LOINC codes")
    for code in codes:
        c.text(codes, code, "codes")
    units = c.need(c.table, "units", "", lambda v: isinstance(v, dict), "a table of unit spellings")
    seen: dict[str, str] = {}
    for scale in ("celsius", "fahrenheit"):
        spellings = c.need(units, scale, "units", lambda v: isinstance(v, list) and v, "a list of spellings")
        for i, spelling in enumerate(spellings):
            at = f"units.{scale}[{i}]"
            if not isinstance(spelling, str) or not spelling.strip():
                raise c.fail(units, at, f"must be a non-empty string, not {spelling!r}")
            key = spelling.strip().casefold()
            if seen.setdefault(key, scale) != scale:
                raise c.fail(units, at, f"{spelling!r} is listed as {seen[key]} too")


_SPECIFIC: dict[str, Callable[[_Check], None]] = {
    "profiles": _profiles, "criteria": _criteria, "severity": _severity, "alerts": _alerts, "drugs": _drugs,
    "treatment": _treatment, "vocabulary": _vocabulary, "temperature": _temperature,
    "infection": lambda c: _numbers(c, "febrile_neutropenia"),
    "timeline": lambda c: [_numbers(c, s) for s in c.table],  # type: ignore[func-returns-value]
}


def validate_tables(tables: dict[str, dict[str, Any]], folder: str, origins: dict[int, str]) -> None:
    """Every table passes its checks, or KnowledgeError names the first problem."""
    for name, table in tables.items():
        c = _Check(name, table, folder, origins)
        if name != "criteria":  # criteria rows are sourced by their version (checked there)
            _sources(c)
        check = _SPECIFIC.get(name)
        if check is not None:
            check(c)


def validate_overlay(name: str, data: dict[str, Any], file: str) -> None:
    """A site's overlay carries its own sources: every value it sets has a `source` beside it or in
    an enclosing table (the bundled source no longer vouches for a site's number)."""
    for node, where, sourced in _walk(data, "", False, (name,)):
        sets_value = any(not isinstance(v, dict | list) and k != "source" for k, v in node.items())
        if sets_value and not sourced:
            raise KnowledgeError(file, where or "(top)",
                                 "no source: a site's value needs its own `source` (this entry or the table enclosing it)")
