"""How labs report the demo's blood draws: units, LOINC codes, %-only differentials, reference
ranges, and a few dirty rows.

Each person is served by one lab with its own habits (count unit, haemoglobin unit, whether it
sends reference ranges, whether rows carry a LOINC code, an analyte name or both), because that is
how mixed units arrive in a warehouse: per source, not per row. Some draws report the differential
as percentages only, so the ANC must be derived from the WBC.

Dirty rows are *added* copies of real rows (never replacements): a missing unit, a negative
value, a WBC of 5000 x10^9/L (a unit slip) and exact duplicates. Every one must end in a reader's
rejects, and none can change a person's truth because the clean row is still there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..knowledge import derived
from ..rules.ranges import profile_for, profile_range
from ..units import convert, loinc_codes_for
from .generate import Population

#: Analytes of one complete blood count with differential, in report order.
CBC: tuple[str, ...] = ("wbc", "neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils",
                        "hemoglobin", "platelets")
DIFF = {"neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils"}
#: Count units by lab (the issue's mix: 10*9/L, K/uL, /uL, 10*3/uL) and their shares.
COUNT_UNITS: tuple[tuple[str, float], ...] = (("10*9/L", 0.35), ("K/uL", 0.25), ("10*3/uL", 0.25), ("/uL", 0.15))
HB_UNITS: tuple[tuple[str, float], ...] = (("g/dL", 0.8), ("g/L", 0.15), ("mmol/L", 0.05))
PERCENT_ONLY_SHARE = 0.15
RANGE_SHARE = 0.5
CODE_STYLES: tuple[tuple[str, float], ...] = (("both", 0.5), ("loinc", 0.3), ("analyte", 0.2))
#: Dirty rows per clean row, by kind.
DIRTY_SHARES: dict[str, float] = {"missing_unit": 0.002, "negative_value": 0.001, "implausible_wbc": 0.0005,
                                  "duplicate_row": 0.002}
IMPLAUSIBLE_WBC = 5000.0  # x10^9/L: a WBC of 5,000 cells/uL sent with a 10^9/L unit


@derived
def loinc_of(analyte: str, percent: bool) -> str:
    """The first (preferred) LOINC code of an analyte from the Core table (knowledge/loinc.toml)."""
    return loinc_codes_for(analyte, percent)[0]


@derived
def _factor(analyte: str, unit: str) -> float:
    """Canonical value = reported value x factor (from knowledge/units.toml via units.convert)."""
    return convert(analyte, 1.0, unit, "demo").factor


def _decimals(analyte: str, unit: str) -> int:
    if unit == "%":
        return 1
    if unit in ("/uL", "g/L") or analyte == "platelets":
        return 0
    if analyte == "hemoglobin":
        return 2 if unit == "mmol/L" else 1
    return 2


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    """Index of an option per item, drawn with the options' shares."""
    p = np.array([w for _, w in options])
    return rng.choice(len(options), n, p=p / p.sum())


#: Unit spellings the rows use; rows hold an index into this tuple (-1 = missing unit).
UNITS: tuple[str, ...] = tuple(u for u, _ in COUNT_UNITS) + tuple(u for u, _ in HB_UNITS) + ("%",)
PCT = UNITS.index("%")
STYLES: tuple[str, ...] = tuple(s for s, _ in CODE_STYLES)
DIRTY_KINDS: tuple[str, ...] = ("",) + tuple(DIRTY_SHARES)
WBC, HB = CBC.index("wbc"), CBC.index("hemoglobin")


@dataclass
class Rows:
    """Observation rows as aligned arrays, strings held as small integer codes (fast at millions of
    rows); the exporters turn codes into Arrow dictionary columns."""

    pid: np.ndarray
    draw: np.ndarray  # index into population.draws (dirty copies keep their source draw)
    time: np.ndarray
    analyte: np.ndarray  # index into CBC
    value: np.ndarray
    unit: np.ndarray  # index into UNITS, -1 = missing
    low: np.ndarray
    high: np.ndarray
    style: np.ndarray  # index into STYLES: which identifier columns are written
    dirty: np.ndarray  # index into DIRTY_KINDS (0 = clean)

    def __len__(self) -> int:
        return len(self.pid)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @property
    def percent(self) -> np.ndarray:
        return self.unit == PCT

    def loinc_codes(self) -> tuple[np.ndarray, list[str]]:
        """Per-row index into the returned list of LOINC codes (absolute or % code of the analyte)."""
        codes = [loinc_of(a, False) for a in CBC] + [loinc_of(a, True) if a in DIFF else "" for a in CBC]
        return self.analyte + len(CBC) * self.percent, codes


def _ranges(pop: Population, pid: np.ndarray, analyte: np.ndarray, time: np.ndarray) -> tuple[np.ndarray, ...]:
    """The person's profile range (standard, or duffy_null for Duffy-null persons) for each row.

    Age bands of the profiles change at whole years at the ages the demo uses (5-85), so one
    lookup per (profile, analyte, sex, age in whole years) serves every row.
    """
    P = pop.persons
    age = ((time.astype("datetime64[D]") - P.birth_date[pid]).astype(np.int64) // 365.25).astype(np.int64)
    key = ((analyte * 2 + P.duffy_null[pid]) * 2 + (P.sex[pid] == "male")) * 200 + np.clip(age, 0, 199)
    size = len(CBC) * 2 * 2 * 200
    lows = np.full(size, np.nan)
    highs = np.full(size, np.nan)
    for k in np.flatnonzero(np.bincount(key, minlength=size)).tolist():
        years, rest = k % 200, k // 200
        male, rest = rest % 2, rest // 2
        duffy, a = rest % 2, rest // 2
        rng = profile_range(profile_for(None, bool(duffy)), CBC[a], "male" if male else "female", years + 0.5)
        lows[k] = rng.low.value if rng.low else np.nan
        highs[k] = rng.high.value if rng.high else np.nan
    return lows[key], highs[key]


def lab_rows(pop: Population) -> Rows:
    """Every clean observation row of the population's draws (8 per draw), vectorised."""
    rng = np.random.default_rng([pop.seed, 2000])
    n_persons = len(pop.persons)
    count_unit = _pick(rng, COUNT_UNITS, n_persons)
    hb_unit = len(COUNT_UNITS) + _pick(rng, HB_UNITS, n_persons)
    sends_range = rng.random(n_persons) < RANGE_SHARE
    style = _pick(rng, CODE_STYLES, n_persons)
    d = pop.draws
    n_draws = d["pid"].size
    pct_only = rng.random(n_draws) < PERCENT_ONLY_SHARE

    k = len(CBC)
    draw = np.repeat(np.arange(n_draws), k)
    pid = d["pid"][draw]
    analyte = np.tile(np.arange(k, dtype=np.int64), n_draws)
    canonical = np.stack([d[a] for a in CBC], axis=1).ravel()
    is_diff = np.tile(np.array([a in DIFF for a in CBC]), n_draws)
    unit = np.where(analyte == HB, hb_unit[pid], count_unit[pid])
    unit[is_diff & pct_only[draw]] = PCT
    low, high = _ranges(pop, pid, analyte, d["time"][draw])
    low[~sends_range[pid]] = np.nan
    high[~sends_range[pid]] = np.nan
    # Unit conversion and rounding through (analyte x unit) lookup tables: one vectorised pass.
    factor = np.ones((len(CBC), len(UNITS)))
    scale = np.ones((len(CBC), len(UNITS)))
    for i, a in enumerate(CBC):
        for j, u in enumerate(UNITS):
            if u == "%" and a not in DIFF:
                continue
            if (a == "hemoglobin") == (j >= len(COUNT_UNITS)) or u == "%":
                factor[i, j] = 1.0 if u == "%" else _factor(a, u)
                scale[i, j] = 10.0 ** _decimals(a, u)
    f, sc = factor[analyte, unit], scale[analyte, unit]
    pct = unit == PCT
    raw = np.where(pct, canonical / d["wbc"][draw] * 100.0, canonical / f)
    value = np.round(raw * sc) / sc
    low = np.where(pct, np.nan, np.round(low / f * sc) / sc)
    high = np.where(pct, np.nan, np.round(high / f * sc) / sc)
    return Rows(pid=pid, draw=draw, time=d["time"][draw], analyte=analyte, value=value, unit=unit, low=low,
                high=high, style=style[pid], dirty=np.zeros(pid.size, np.int64))


def add_dirty(rows: Rows, seed: int) -> tuple[Rows, dict[str, int]]:
    """Insert dirty copies among their source draw's rows; returns the rows and the count per kind."""
    rng = np.random.default_rng([seed, 3000])
    n = len(rows)
    copies: list[Rows] = []
    counts: dict[str, int] = {}
    for code, kind in enumerate(DIRTY_KINDS[1:], start=1):
        pool = np.flatnonzero(rows.analyte == WBC) if kind == "implausible_wbc" else np.arange(n)
        m = min(pool.size, int(round(n * DIRTY_SHARES[kind])))
        c = rows.take(np.sort(rng.choice(pool, m, replace=False)))
        c.dirty = np.full(m, code)
        if kind == "missing_unit":
            c.unit = np.full(m, -1)
        elif kind == "negative_value":
            c.value = -np.maximum(c.value, 1.0)
        elif kind == "implausible_wbc":
            c.value = np.full(m, IMPLAUSIBLE_WBC)
            c.unit = np.full(m, UNITS.index("10*9/L"))
            c.low = np.full(m, np.nan)
            c.high = np.full(m, np.nan)
        copies.append(c)
        counts[kind] = m
    # each copy lands among the rows of its own draw (as a resent or mistyped result would)
    extra = Rows(**{f: np.concatenate([getattr(c, f) for c in copies]) for f in Rows.__dataclass_fields__})
    at = np.searchsorted(rows.draw, extra.draw) + rng.integers(1, len(CBC), len(extra))
    order = np.argsort(at, kind="stable")
    at = at[order]
    merged = Rows(**{f: np.insert(getattr(rows, f), at, getattr(extra, f)[order])
                     for f in Rows.__dataclass_fields__})
    return merged, counts
