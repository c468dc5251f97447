"""Which reference range applies to a value, and whether the value is low or high against it.

Ranges come from a named profile (knowledge/profiles.toml), chosen per person (sex, age, Duffy
status); a lab's own range on the observation wins. Every answer carries where its range came
from, because "medical practices can differ" (article) and a reader must be able to check.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, NamedTuple

from ..knowledge import derived, load_table
from ..model import Flag, InputError, ReferenceRange


class Bound(NamedTuple):
    """One limit of a range and where it comes from (a profile row's source, or the lab)."""

    value: float
    source: str


class ResolvedRange(NamedTuple):
    """The range one value is judged against: each side from the lab when given, else the profile."""

    low: Bound | None
    high: Bound | None
    from_lab: bool

    @property
    def reference_range(self) -> ReferenceRange:
        return ReferenceRange(self.low.value if self.low else None, self.high.value if self.high else None)

    def describe(self, profile: str) -> str:
        if self.from_lab:
            return "lab"
        return f"profile {profile}"


def profile_names() -> list[str]:
    return list(load_table("profiles")["profiles"])


@derived
def default_profile() -> str:
    return load_table("profiles")["default"]


@derived
def adult_age() -> float:
    return float(load_table("profiles")["adult_age_years"])


@derived
def _profile_rows(profile: str) -> tuple[dict[str, Any], ...]:
    """A profile's rows followed by those of the profiles it extends (first match wins)."""
    profiles = load_table("profiles")["profiles"]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    name: str | None = profile
    while name is not None:
        if name in seen:
            raise ValueError(f"profile cycle at {name}")
        seen.add(name)
        spec = profiles[name]
        rows.extend(spec.get("ranges", []))
        name = spec.get("extends")
    return tuple(rows)


def check_profile(profile: str, field: str = "profile") -> str:
    if profile not in load_table("profiles")["profiles"]:
        raise InputError(field, f"unknown profile {profile!r}; choose one of: {', '.join(profile_names())}")
    return profile


@derived
def _rows_for(profile: str, analyte: str, percent: bool) -> tuple[dict[str, Any], ...]:
    return tuple(r for r in _profile_rows(profile)
                 if r["analyte"] == analyte and bool(r.get("percent", False)) == percent)


@derived
def _age_edges(profile: str) -> tuple[float, ...]:
    edges = {0.0}
    for row in _profile_rows(profile):
        for side in ("age_min", "age_max"):
            if side in row:
                edges.add(float(row[side]))
    return tuple(sorted(edges))


def age_band(profile: str, age: float | None) -> float | None:
    """The youngest age with the same ranges as `age` (an edge of the profile's age bands): every age
    in a band matches the same rows, so a cache keyed by it holds one entry per band, not per day
    of age. A negative age (a birth date after the draw) is left as it is."""
    if age is None:
        return None
    edges = _age_edges(profile)
    i = bisect_right(edges, age)
    return edges[i - 1] if i else age


def _row_matches(row: dict[str, Any], sex: str, age: float | None) -> bool:
    if "sex" in row and row["sex"] != sex:
        return False
    if "age_min" in row or "age_max" in row:
        # Unknown age is read as adult (and the assessment warns); a band only matches a known age.
        effective_age = adult_age() if age is None else age
        if not (row.get("age_min", 0.0) <= effective_age < row.get("age_max", float("inf"))):
            return False
    return True


@derived(maxsize=16384)
def profile_range(profile: str, analyte: str, sex: str, age: float | None, percent: bool = False
                  ) -> ResolvedRange:
    """The profile's low and high bounds for one person, each with its source (cached: pure)."""
    low = high = None
    for row in _rows_for(profile, analyte, percent):
        if not _row_matches(row, sex, age):
            continue
        if low is None and "low" in row:
            low = Bound(float(row["low"]), row["source"])
        if high is None and "high" in row:
            high = Bound(float(row["high"]), row["source"])
        if low is not None and high is not None:
            break
    return ResolvedRange(low, high, from_lab=False)


@derived(maxsize=65536)
def resolve_range(profile: str, analyte: str, sex: str, age: float | None, percent: bool,
                  lab: ReferenceRange | None) -> ResolvedRange:
    """The lab's range where it gives a bound, else the profile's bound for that side."""
    base = profile_range(profile, analyte, sex, age, percent)
    if lab is None or (lab.low is None and lab.high is None):
        return base
    low = Bound(lab.low, "lab reference range") if lab.low is not None else base.low
    high = Bound(lab.high, "lab reference range") if lab.high is not None else base.high
    return ResolvedRange(low, high, from_lab=True)


def flag(value: float, rng: ResolvedRange) -> Flag:
    """Low is strictly below the lower limit (a value equal to the LLN is not low), high strictly above."""
    low, high, _ = rng  # unpacked: cheaper than reading a NamedTuple's fields one by one
    if low is not None and value < low.value:
        return "low"
    if high is not None and value > high.value:
        return "high"
    return "normal"


def profile_for(requested: str | None, duffy_null: bool) -> str:
    """An explicit profile wins; otherwise Duffy-null status (never race) selects `duffy_null`."""
    if requested:
        return check_profile(requested)
    return "duffy_null" if duffy_null else default_profile()
