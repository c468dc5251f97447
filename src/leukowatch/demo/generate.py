"""A synthetic population with known truth, generated per scenario as numpy arrays.

Speed comes from never looping over rows in Python: each scenario lays out its persons' blood
draws as a matrix (one row per person, one column per planned draw, a mask for draws that do not
happen), the values are drawn for whole columns at once, and the matrix is flattened (about a
million observations per second including the lab rows of labs.py, on a busy 2-core machine).

Determinism: each scenario has its own generator seeded from (seed, scenario number), so the same
seed gives the same population, and adding a scenario does not reshuffle the others.

Truth is the scenario's intent (see scenarios.py). The per-draw state (`anc_low`, `lym_low`,
`pancytopenic`) is recorded next to the values so that tests can check that every value sits on
the side of the `standard`/`duffy_null` limits the intent says, and the episode count is the
number of runs of low-ANC draws, which is what a clinician counting nadirs would count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import scenarios as S
from .scenarios import Band

#: Histories start in the 18 months after this date.
ANCHOR = np.datetime64("2022-07-01")

# ANC states of a draw (which band its value comes from).
NORMAL, LOW, ONSET, SEVERE, GCSF, CYC_NADIR, DUFFY, CHRONIC, PANCYTO, LEUK_LOW = range(10)
_ANC_BAND: dict[int, Band] = {
    LOW: S.ANC_LOW, ONSET: S.ANC_ONSET, SEVERE: S.ANC_SEVERE, GCSF: S.ANC_GCSF, CYC_NADIR: S.ANC_CYCLIC_NADIR,
    PANCYTO: S.ANC_PANCYTOPENIA, LEUK_LOW: S.ANC_LEUKAEMIA_LOW,
}
# Lymphocyte states.
L_NORMAL, L_LOW, L_LOW_WBC, L_CLL = range(4)


@dataclass
class Col:
    """One planned draw per person of a scenario (a column of its schedule matrix)."""

    day: np.ndarray  # int days since the person's history start
    mask: np.ndarray | bool = True  # which persons have this draw
    anc: np.ndarray | int = NORMAL  # ANC state per person (or one for all)
    lym: np.ndarray | int = L_NORMAL
    marrow: bool = False  # monocytes/eosinophils/basophils from the low-WBC bands
    cytopenic: bool = False  # haemoglobin and platelets from the low bands
    temp: np.ndarray | None = None  # temperature (°C) recorded just before the draw, NaN = none


@dataclass
class Side:
    """Rows of the side tables a scenario produces, in person-index form."""

    meds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    chemo: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    conditions: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def med(self, pid: np.ndarray, name: np.ndarray, start: np.ndarray, stop: np.ndarray | None = None) -> None:
        stop = np.full(len(pid), -1, np.int64) if stop is None else stop
        self.meds.append((pid, np.asarray(name, object), np.asarray(start, np.int64), np.asarray(stop, np.int64)))

    def condition(self, pid: np.ndarray, name: Any, onset: np.ndarray) -> None:
        names = np.broadcast_to(np.asarray(name, object), pid.shape)
        self.conditions.append((pid, names, np.asarray(onset, np.int64)))


@dataclass
class Persons:
    patient_id: np.ndarray  # str objects
    sex: np.ndarray  # "male"/"female"
    birth_date: np.ndarray  # datetime64[D]
    start: np.ndarray  # datetime64[D], history start
    duffy_null: np.ndarray  # bool
    scenario: np.ndarray  # str objects
    child: np.ndarray  # bool
    # baselines (10^9/L, g/dL)
    anc: np.ndarray
    lym: np.ndarray
    mono: np.ndarray
    eos: np.ndarray
    baso: np.ndarray
    hb: np.ndarray
    plt: np.ndarray

    def __len__(self) -> int:
        return len(self.patient_id)


@dataclass
class Population:
    """Everything the exporters write. Arrays are aligned per table; `pid` indexes `persons`."""

    seed: int
    persons: Persons
    draws: dict[str, np.ndarray]
    medications: dict[str, np.ndarray]
    chemotherapy: dict[str, np.ndarray]
    conditions: dict[str, np.ndarray]
    temperatures: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]



def _chance(rng: np.random.Generator, shape: Any, share: float) -> np.ndarray:
    """True for about `share` of the draws: a simulation setting (how many persons get a fever, a
    G-CSF course...), never a clinical threshold."""
    return rng.random(shape) < share

def _u(rng: np.random.Generator, band: Band, size: Any) -> np.ndarray:
    return rng.uniform(band.lo, band.hi, size)


def _vary(rng: np.random.Generator, base: np.ndarray, band: Band, cv: float = S.COUNT_CV) -> np.ndarray:
    """Day-to-day variation around a baseline (log-normal, truncated at 2 SD), kept inside the band."""
    z = np.clip(rng.standard_normal(base.shape), -2.0, 2.0)
    return np.clip(base * np.exp(cv * z), band.lo, band.hi)


def _days(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    return rng.integers(lo, hi + 1, n)


def _sorted_days(rng: np.random.Generator, n: int, k: int, lo: int, hi: int) -> np.ndarray:
    return np.sort(rng.integers(lo, hi + 1, (n, k)), axis=1)


def _matrix_cols(days: np.ndarray, mask: np.ndarray, **kw: Any) -> list[Col]:
    return [Col(days[:, j], mask[:, j], **kw) for j in range(days.shape[1])]


# ------------------------------------------------------------------------------------------ scenarios
# Each returns the schedule columns, side rows, and per-person extras (febrile neutropenia, drug).

def _healthy(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    k = 1 + np.minimum(rng.poisson(3, n), 7)
    days = _sorted_days(rng, n, 8, 0, 730)
    mask = np.arange(8)[None, :] < k[:, None]
    on_med = _chance(rng, n, 0.3)
    side.med(pid[on_med], rng.choice(S.OTHER_MEDICINES, on_med.sum()), -_days(rng, 30, 400, on_med.sum()))
    return _matrix_cols(days, mask), {}


def _viral(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    base_k = rng.integers(0, 3, n)
    base = _sorted_days(rng, n, 2, 0, 300)
    d = _days(rng, 330, 390, n)
    febrile = _chance(rng, n, 0.6)
    temp = np.where(febrile, _u(rng, S.VIRAL_FEVER_C, n), np.nan)
    cols = _matrix_cols(base, np.arange(2)[None, :] < base_k[:, None])
    cols += [
        Col(d, anc=ONSET, temp=temp),  # fever at presentation, ANC at least 1.0: not febrile neutropenia
        Col(d + _days(rng, 3, 7, n), anc=LOW),
        Col(d + _days(rng, 10, 14, n), _chance(rng, n, 0.5), anc=LOW),
        Col(d + _days(rng, 21, 45, n)),  # recovered
        Col(d + _days(rng, 90, 300, n), _chance(rng, n, 0.5)),
    ]
    side.condition(pid, rng.choice(["influenza", "COVID-19"], n), d - _days(rng, 1, 4, n))
    return cols, {}


def _chemotherapy(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    # At most 4 cycles: nadirs then span < 90 days (3 x 21 + 7), so the article's chronic rule and
    # the clinician (who would not call treatment-induced nadirs chronic neutropenia) agree.
    n = len(pid)
    ncyc = rng.choice([3, 4], n)
    delay = np.where(_chance(rng, (n, 4), 0.8), 0, rng.integers(1, 8, (n, 4)))
    delay[:, 0] = 0
    dose = 14 + 21 * np.arange(4)[None, :] + np.cumsum(delay, axis=1)  # (n, 4)
    fn = _chance(rng, n, 0.25)
    fn_cycle = (rng.random(n) * (ncyc - 1)).astype(int)  # never the last cycle: G-CSF follows
    primary = ~fn & (_chance(rng, n, 0.2))
    cols: list[Col] = []
    for k in range(4):
        has = k < ncyc
        state = np.where(fn & (k == fn_cycle), SEVERE,
                         np.where(primary | (fn & (k > fn_cycle)), GCSF, LOW))
        temp = np.where(state == SEVERE, _u(rng, S.FEVER_C, n),
                        np.where(_chance(rng, n, 0.3), _u(rng, S.AFEBRILE_C, n), np.nan))
        cols.append(Col(dose[:, k] - _days(rng, 0, 2, n), has))  # pre-cycle CBC: recovered
        cols.append(Col(dose[:, k] + _days(rng, 7, 14, n), has, anc=state, marrow=True, temp=temp))  # nadir
    last = dose[np.arange(n), ncyc - 1]
    cols.append(Col(last + _days(rng, 21, 28, n)))  # end-of-treatment CBC: recovered
    regimen = rng.integers(0, len(S.REGIMENS), n)
    names = np.array([r for r, _ in S.REGIMENS], object)
    cancers = np.array([c for _, c in S.REGIMENS], object)
    mask = np.arange(4)[None, :] < ncyc[:, None]
    rows, cycles = np.nonzero(mask)
    side.chemo.append((pid[rows], dose[rows, cycles], names[regimen[rows]]))
    side.condition(pid, cancers[regimen], dose[:, 0] - _days(rng, 14, 60, n))
    g_start = np.where(primary, dose[:, 0], dose[np.arange(n), np.minimum(fn_cycle + 1, 3)]) + 1
    gcsf = primary | fn
    side.med(pid[gcsf], np.full(gcsf.sum(), S.GCSF, object), g_start[gcsf], last[gcsf] + 1)
    return cols, {"febrile_neutropenia": fn}


def _drug_induced(rng: np.random.Generator, pid: np.ndarray, side: Side, child: np.ndarray
                  ) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    adult_only = np.array([d[2] for d in S.DRUGS])
    allowed = np.where(child[:, None], ~adult_only[None, :], True)
    weights = allowed / allowed.sum(axis=1, keepdims=True)
    drug = (rng.random(n)[:, None] > np.cumsum(weights, axis=1)).sum(axis=1)
    interval = np.array([d[4] for d in S.DRUGS])[drug]
    start = _days(rng, 30, 230, n)
    onset = start + _days(rng, 19, 60, n)  # Andersohn 2007: onset 19-60 days after the start
    severe = _chance(rng, n, 0.35)  # agranulocytosis
    fn = severe & (_chance(rng, n, 0.4))
    cols = [Col(start - _days(rng, 0, 10, n))]  # baseline before the first dose
    for j in range(1, 9):  # monitoring draws while counts are still normal
        day = start + j * interval
        cols.append(Col(day, day < onset - 1))
    temp = np.where(fn, _u(rng, S.FEVER_C, n), np.nan)
    cols += [
        Col(onset, anc=np.where(severe, SEVERE, LOW), temp=temp, marrow=True),
        Col(onset + _days(rng, 2, 4, n), anc=LOW),
        Col(onset + _days(rng, 9, 16, n)),  # recovered after stopping
        Col(onset + _days(rng, 30, 45, n)),
    ]
    spellings = np.array([d[1][i % len(d[1])] for d in S.DRUGS for i in range(2)], object).reshape(-1, 2)
    name = spellings[drug, rng.integers(0, 2, n)]
    side.med(pid, name, start, onset)  # stopped on the day of the low result
    side.condition(pid, np.array([d[3] for d in S.DRUGS], object)[drug], start - _days(rng, 0, 30, n))
    return cols, {"febrile_neutropenia": fn, "drug": np.array([d[0] for d in S.DRUGS], object)[drug]}


def _drug_monitored(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    clozapine = _chance(rng, n, 0.6)
    k = np.where(clozapine, rng.integers(18, 27, n), rng.integers(4, 9, n))
    interval = np.where(clozapine, 7, rng.integers(14, 31, n))
    start = _days(rng, 7, 60, n)
    day = start[:, None] + interval[:, None] * np.arange(1, 27)[None, :]
    cols = [Col(start - _days(rng, 0, 7, n))] + _matrix_cols(day, np.arange(26)[None, :] < k[:, None])
    side.med(pid, np.where(clozapine, "clozapine", "carbamazepine"), start)
    side.condition(pid, np.where(clozapine, "schizophrenia", "epilepsy"), start - _days(rng, 30, 400, n))
    return cols, {}


def _autoimmune(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    k = rng.integers(4, 9, n)
    day = _days(rng, 0, 60, n)[:, None] + np.cumsum(rng.integers(35, 91, (n, 8)), axis=1)
    lupus = _chance(rng, n, 0.5)
    side.condition(pid, np.where(lupus, "systemic lupus erythematosus", "rheumatoid arthritis"),
                   day[:, 0] - _days(rng, 60, 900, n))
    side.med(pid[lupus], np.full(lupus.sum(), "hydroxychloroquine", object), day[lupus, 0] - 30)
    return _matrix_cols(day, np.arange(8)[None, :] < k[:, None], anc=CHRONIC), {}


def _cyclic(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    # Nadir phase 0-4 (ANC below 0.2, Dale & Welte: 3-5 days), recovering 5-7 and falling in the last 3
    # days of the period (low), normal otherwise. Period 21 d in 80% (docs/clinical-reference.md §8), else
    # 18-23 d, short enough that three nadirs fall inside the 8 weeks of 3x/week sampling.
    n = len(pid)
    period = np.where(_chance(rng, n, 0.8), 21, rng.choice([18, 19, 20, 22, 23], n))
    study = _days(rng, 400, 430, n)
    t0 = study + _days(rng, 1, 4, n)  # first nadir of the study
    offsets = (7 * np.arange(8)[:, None] + np.array([0, 2, 4])[None, :]).ravel()  # Mon/Wed/Fri x 8 weeks
    k1 = rng.integers(6, 13, n)  # earlier visits at nadirs, the first >= 108 days before the study
    k2 = (2 + rng.random(n) * (k1 - 2)).astype(int)
    days = [study + o for o in offsets]
    for k in (k1, k2):
        days += [t0 - k * period + 2, t0 - k * period + 10]  # visit at a nadir, recheck 8 days later
    cols = []
    for d in days:
        phase = np.mod(d - t0, period)
        state = np.where(phase < 5, CYC_NADIR, np.where((phase < 8) | (phase >= period - 3), LOW, NORMAL))
        cols.append(Col(d, anc=state))
    side.condition(pid, "cyclic neutropenia", t0 - k1 * period)
    return cols, {"period": period}


def _b12_folate(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    base_k = rng.integers(0, 3, n)
    cols = _matrix_cols(_sorted_days(rng, n, 2, 0, 200), np.arange(2)[None, :] < base_k[:, None])
    d = _days(rng, 300, 360, n)
    low = {"anc": PANCYTO, "lym": L_LOW_WBC, "marrow": True, "cytopenic": True}
    cols += [Col(d, **low), Col(d + _days(rng, 5, 10, n), **low), Col(d + _days(rng, 50, 70, n)),
             Col(d + _days(rng, 100, 150, n), _chance(rng, n, 0.7))]
    b12 = _chance(rng, n, 0.6)
    side.condition(pid, np.where(b12, "vitamin B12 deficiency", "folate deficiency"), d)
    side.med(pid, np.where(b12, "cyanocobalamin", "folic acid"), d + 1, np.where(b12, -1, d + 120))
    return cols, {}


def _hiv(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    k = rng.integers(3, 8, n)
    day = _days(rng, 0, 60, n)[:, None] + np.cumsum(rng.integers(60, 151, (n, 8)), axis=1)
    side.condition(pid, "HIV", day[:, 0] - _days(rng, 100, 2000, n))
    side.med(pid, np.full(n, "Biktarvy", object), day[:, 0] - _days(rng, 30, 900, n))
    # TMP-SMX prophylaxis: a listed medicine with normal neutrophils (not drug-associated).
    pjp = _chance(rng, n, 0.3)
    side.med(pid[pjp], np.full(pjp.sum(), "Bactrim DS", object), day[pjp, 0] - 10)
    return _matrix_cols(day, np.arange(8)[None, :] < k[:, None], lym=L_LOW), {}


def _leukaemia_high(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    k = rng.integers(2, 6, n)
    day = _days(rng, 0, 60, n)[:, None] + np.cumsum(rng.integers(60, 201, (n, 5)), axis=1)
    side.condition(pid, "chronic lymphocytic leukemia", day[:, 0] - _days(rng, 0, 400, n))
    return _matrix_cols(day, np.arange(5)[None, :] < k[:, None], lym=L_CLL), {}


def _leukaemia_low(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    base = _days(rng, 0, 200, n)
    d = _days(rng, 300, 360, n)
    low = {"anc": LEUK_LOW, "lym": L_LOW_WBC, "marrow": True, "cytopenic": True}
    cols = [Col(base, _chance(rng, n, 0.6)), Col(d, **low), Col(d + _days(rng, 2, 5, n), **low),
            Col(d + _days(rng, 7, 14, n), _chance(rng, n, 0.6), **low)]
    side.condition(pid, rng.choice(["acute myeloid leukemia", "hairy cell leukemia"], n), d + 2)
    return cols, {}


def _duffy_low_normal(rng: np.random.Generator, pid: np.ndarray, side: Side) -> tuple[list[Col], dict[str, Any]]:
    n = len(pid)
    k = rng.integers(3, 9, n)
    days = _sorted_days(rng, n, 8, 0, 900)
    return _matrix_cols(days, np.arange(8)[None, :] < k[:, None], anc=DUFFY), {}


_BUILDERS = {
    "healthy": _healthy, "viral": _viral, "chemotherapy": _chemotherapy, "drug_induced": _drug_induced,
    "drug_monitored": _drug_monitored, "autoimmune": _autoimmune, "cyclic": _cyclic, "b12_folate": _b12_folate,
    "hiv": _hiv, "leukaemia_high": _leukaemia_high, "leukaemia_low": _leukaemia_low,
    "duffy_low_normal": _duffy_low_normal,
}


# ------------------------------------------------------------------------------------------ persons

def _persons(rng: np.random.Generator, n: int) -> Persons:
    child = rng.random(n) < S.CHILD_SHARE
    age = np.where(child, rng.uniform(*S.CHILD_AGE_YEARS, n), rng.uniform(*S.ADULT_AGE_YEARS, n))
    start = ANCHOR + rng.integers(0, 540, n).astype("timedelta64[D]")
    birth = start - np.round(age * 365.25).astype("timedelta64[D]")
    sex = np.where(_chance(rng, n, 0.5), "female", "male").astype(object)
    duffy = rng.random(n) < S.DUFFY_NULL_SHARE
    names = [s.name for s in S.SCENARIOS]
    p_adult = np.array([s.adult_weight for s in S.SCENARIOS])
    p_child = np.array([s.child_weight for s in S.SCENARIOS])
    pick_adult = rng.choice(len(names), n, p=p_adult / p_adult.sum())
    pick_child = rng.choice(len(names), n, p=p_child / p_child.sum())
    scenario = np.array(names, object)[np.where(child, pick_child, pick_adult)]
    scenario[duffy & ~child & (rng.random(n) < S.DUFFY_LOW_NORMAL_SHARE)] = "duffy_low_normal"
    # cancer chemotherapy and leukaemia of older adults
    old = age >= 40
    scenario[(scenario == "leukaemia_high") & ~old] = "healthy"
    male = sex == "male"
    return Persons(
        patient_id=np.array([f"P{i:06d}" for i in range(1, n + 1)], object),
        sex=sex, birth_date=birth, start=start, duffy_null=duffy, scenario=scenario, child=child,
        anc=rng.uniform(3.0, 5.0, n), lym=np.where(child, rng.uniform(2.0, 3.0, n), rng.uniform(1.8, 2.8, n)),
        mono=rng.uniform(0.35, 0.6, n), eos=rng.uniform(0.1, 0.25, n), baso=rng.uniform(0.02, 0.05, n),
        hb=np.where(male, rng.uniform(14.3, 16.2, n), rng.uniform(12.9, 14.6, n)),
        plt=rng.uniform(200.0, 330.0, n),
    )


# ------------------------------------------------------------------------------------------ values

def _values(rng: np.random.Generator, P: Persons, pid: np.ndarray, anc_state: np.ndarray, lym_state: np.ndarray,
            marrow: np.ndarray, cytopenic: np.ndarray) -> dict[str, np.ndarray]:
    """Counts for every draw, from the person's baselines and the draw's states, all columns at once."""
    m = len(pid)
    anc = _vary(rng, P.anc[pid], S.ANC_NORMAL)
    for state, band in _ANC_BAND.items():
        sel = anc_state == state
        anc[sel] = _u(rng, band, sel.sum())
    for state, band in ((DUFFY, S.ANC_DUFFY), (CHRONIC, S.ANC_CHRONIC)):
        sel = anc_state == state
        # a steady person-level value with day-to-day variation around it
        level = rng.uniform(band.lo + 0.03, band.hi - 0.03, len(P))
        anc[sel] = _vary(rng, level[pid[sel]], band, cv=0.05)
    lym = _vary(rng, P.lym[pid], S.LYM_NORMAL)
    lym_level = rng.uniform(0.4, 0.7, len(P))
    sel = lym_state == L_LOW
    lym[sel] = _vary(rng, lym_level[pid[sel]], S.LYM_LOW, cv=0.1)
    sel = lym_state == L_LOW_WBC
    lym[sel] = _u(rng, S.LYM_LOW_WBC, sel.sum())
    cll_level = rng.uniform(20.0, 50.0, len(P))
    sel = lym_state == L_CLL
    lym[sel] = _vary(rng, cll_level[pid[sel]], S.LYM_CLL, cv=0.15)
    mono = np.where(marrow, _u(rng, S.MONO_LOW_WBC, m), _vary(rng, P.mono[pid], S.MONO))
    eos = np.where(marrow, _u(rng, S.EOS_LOW_WBC, m), _vary(rng, P.eos[pid], S.EOS))
    baso = np.where(marrow, _u(rng, S.BASO_LOW_WBC, m), _vary(rng, P.baso[pid], S.BASO))
    hb_band = [S.HB_NORMAL[s] for s in ("male", "female")]
    male = P.sex[pid] == "male"
    hb = np.where(male, _vary(rng, P.hb[pid], hb_band[0], 0.04), _vary(rng, P.hb[pid], hb_band[1], 0.04))
    hb = np.where(cytopenic, _u(rng, S.HB_LOW, m), hb)
    plt = np.where(cytopenic, _u(rng, S.PLT_LOW, m), _vary(rng, P.plt[pid], S.PLT_NORMAL, 0.1))
    # A normal draw has a normal WBC for any sex and age: move ANC (within its band) to fit.
    normal = (anc_state == NORMAL) & (lym_state == L_NORMAL)
    rest = lym + mono + eos + baso
    fitted = np.clip(anc, S.WBC_NORMAL.lo - rest, S.WBC_NORMAL.hi - rest)
    anc = np.where(normal, np.clip(fitted, S.ANC_NORMAL.lo, S.ANC_NORMAL.hi), anc)
    wbc = anc + lym + mono + eos + baso
    return {"wbc": wbc, "neutrophils": anc, "lymphocytes": lym, "monocytes": mono, "eosinophils": eos,
            "basophils": baso, "hemoglobin": hb, "platelets": plt}


def _episodes(pid: np.ndarray, low: np.ndarray, n: int) -> np.ndarray:
    """Runs of consecutive low draws per person (draws sorted by person and time)."""
    prev_low = np.r_[False, low[:-1]] & np.r_[False, pid[1:] == pid[:-1]]
    starts = low & ~prev_low
    return np.bincount(pid[starts], minlength=n)


def generate(persons: int = 2000, seed: int = 7) -> Population:
    """The demo population: `persons` persons, deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    P = _persons(rng, persons)
    cols_by: list[tuple[np.ndarray, list[Col]]] = []
    side = Side()
    fn = np.zeros(persons, bool)
    drug = np.full(persons, None, object)
    period = np.zeros(persons, np.int64)
    for number, sc in enumerate(S.SCENARIOS):
        idx = np.flatnonzero(P.scenario == sc.name)
        if idx.size == 0:
            continue
        srng = np.random.default_rng([seed, number])
        builder = _BUILDERS[sc.name]
        if sc.name == "drug_induced":
            cols, extra = builder(srng, idx, side, P.child[idx])
        else:
            cols, extra = builder(srng, idx, side)
        if "febrile_neutropenia" in extra:
            fn[idx] = extra["febrile_neutropenia"]
        if "drug" in extra:
            drug[idx] = extra["drug"]
        if "period" in extra:
            period[idx] = extra["period"]
        cols_by.append((idx, cols))

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("pid", "day", "anc", "lym", "marrow", "cyto", "temp")}
    for idx, cols in cols_by:
        n = len(idx)
        for c in cols:
            mask = np.broadcast_to(np.asarray(c.mask, bool), (n,))
            parts["pid"].append(idx[mask])
            parts["day"].append(np.asarray(c.day)[mask])
            parts["anc"].append(np.broadcast_to(np.asarray(c.anc), (n,))[mask])
            parts["lym"].append(np.broadcast_to(np.asarray(c.lym), (n,))[mask])
            parts["marrow"].append(np.full(mask.sum(), c.marrow))
            parts["cyto"].append(np.full(mask.sum(), c.cytopenic))
            parts["temp"].append(np.full(mask.sum(), np.nan) if c.temp is None else c.temp[mask])
    flat = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.lexsort((flat["day"], flat["pid"]))
    flat = {k: v[order] for k, v in flat.items()}
    # one draw per person and day: a second planned draw on the same day is dropped
    dup = np.r_[False, (flat["pid"][1:] == flat["pid"][:-1]) & (flat["day"][1:] == flat["day"][:-1])]
    flat = {k: v[~dup] for k, v in flat.items()}
    pid = flat["pid"]
    vrng = np.random.default_rng([seed, 1000])
    values = _values(vrng, P, pid, flat["anc"], flat["lym"], flat["marrow"], flat["cyto"])
    minutes = vrng.integers(7 * 60, 12 * 60, pid.size).astype("timedelta64[m]")
    time = (P.start[pid] + flat["day"].astype("timedelta64[D]")).astype("datetime64[m]") + minutes
    anc_low = ~np.isin(flat["anc"], (NORMAL, DUFFY))
    lym_low = flat["lym"] == L_LOW
    draws = {"pid": pid, "time": time.astype("datetime64[s]"), **values, "anc_low": anc_low,
             "lym_low": lym_low, "pancytopenic": flat["cyto"]}

    has_temp = ~np.isnan(flat["temp"])
    temp_time = time[has_temp] - vrng.integers(30, 120, has_temp.sum()).astype("timedelta64[m]")
    temperatures = {"pid": pid[has_temp], "time": temp_time.astype("datetime64[s]"),
                    "temperature_c": np.round(flat["temp"][has_temp], 1)}

    def _date(p: np.ndarray, day: np.ndarray) -> np.ndarray:
        return P.start[p] + day.astype("timedelta64[D]")

    def _cat(rows: list[tuple[np.ndarray, ...]], width: int) -> list[np.ndarray]:
        if not rows:
            return [np.zeros(0, np.int64)] + [np.zeros(0, object)] * (width - 1)
        return [np.concatenate([r[i] for r in rows]) for i in range(width)]

    mp, mn, ms, me = _cat(side.meds, 4)
    medications = {"pid": mp, "name": mn, "start": _date(mp, ms),
                   "stop": np.where(me >= 0, _date(mp, np.maximum(me, 0)), np.datetime64("NaT"))}
    cp, cd, cr = _cat(side.chemo, 3)
    chemotherapy = {"pid": cp, "dose_date": _date(cp, cd), "regimen": cr}
    kp, kn, ko = _cat(side.conditions, 3)
    conditions = {"pid": kp, "name": kn, "onset": _date(kp, ko)}
    for table in (medications, chemotherapy, conditions):
        o = np.argsort(table["pid"], kind="stable")
        for k in table:
            table[k] = table[k][o]

    truth: dict[str, np.ndarray] = {"pid": np.arange(persons), "scenario": P.scenario}
    for finding in S.FINDINGS:
        truth[finding] = np.isin(P.scenario, [s.name for s in S.SCENARIOS if finding in s.truth])
    truth["febrile_neutropenia"] = fn
    truth["neutropenia_episodes"] = _episodes(pid, anc_low, persons)
    truth["drug"] = drug
    truth["cyclic_period_days"] = np.where(period > 0, period, 0)
    return Population(seed, P, draws, medications, chemotherapy, conditions, temperatures, truth)
