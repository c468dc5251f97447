"""Time-course rules over a person's draws: episodes, cyclic, chemotherapy nadirs, drug timing.

Shared by the single-request assessment (a request may carry earlier observations) and by the
history and population engines, so "chronic" means the same thing everywhere: low on at least
`min_low_results` occasions spanning at least `min_span_days` (the article's "three occasions over
3 months", read as 90 days so every engine agrees to the day).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from ..knowledge import load_table
from .chronic import LowResult, chronic_evidence, chronic_rule, chronicity, group_draws  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Point:
    """One result of one analyte in a person's series, already judged (low or not, grade)."""

    time: datetime
    value: float
    low: bool
    grade: int | None = None


@dataclass(frozen=True)
class Episode:
    """A run of consecutive low results: onset, nadir, worst grade, and when it recovered.

    `recovery` is the first result that is no longer low (None while the episode is ongoing);
    `duration_days` runs from onset to recovery, or to the last low result if not yet recovered.
    """

    analyte: str
    onset: datetime
    last_low: datetime
    nadir_value: float
    nadir_time: datetime
    worst_grade: int | None
    n_low: int
    recovery: datetime | None

    @property
    def duration_days(self) -> int:
        return ((self.recovery or self.last_low) - self.onset).days


def episodes(analyte: str, points: list[Point]) -> list[Episode]:
    """Gaps-and-islands over time-ordered results: each island of lows is one episode.

    The population engine computes the same islands with window functions; the parity test holds
    both to identical onset, nadir, worst grade and recovery.
    """
    out: list[Episode] = []
    run: list[Point] = []
    for p in sorted(points, key=lambda q: q.time):
        if p.low:
            run.append(p)
            continue
        if run:
            out.append(_episode(analyte, run, p.time))
            run = []
    if run:
        out.append(_episode(analyte, run, None))
    return out


def _episode(analyte: str, run: list[Point], recovery: datetime | None) -> Episode:
    nadir = min(run, key=lambda q: (q.value, q.time))  # earliest of equal nadirs
    grades = [q.grade for q in run if q.grade is not None]
    return Episode(analyte, run[0].time, run[-1].time, nadir.value, nadir.time,
                   max(grades) if grades else None, len(run), recovery)


# ---------------------------------------------------------------------------------------------
# Cyclic neutropenia


@dataclass(frozen=True)
class PeriodogramPeak:
    """The strongest rhythm of a series: its period, power (0-1) and false-alarm probability."""

    period_days: float
    power: float
    false_alarm_probability: float


def lomb_scargle(days: list[float], values: list[float], periods: list[float]) -> list[float]:
    """Lomb-Scargle power (standard normalisation, 0-1) of `values` sampled at `days`, per period.

    Written out (Scargle 1982, with the time offset tau that makes the fit independent of where the
    series starts) rather than imported, so that `rules/` stays free of numpy/scipy and the
    single-request path starts fast; a test checks it against `scipy.signal.lombscargle`.
    The power is the fraction of the variance a sinusoid of that period explains.
    """
    n = len(values)
    mean = sum(values) / n
    y = [v - mean for v in values]
    total = sum(v * v for v in y)
    if total == 0:
        return [0.0 for _ in periods]
    out: list[float] = []
    for period in periods:
        w = 2 * math.pi / period
        tau = math.atan2(sum(math.sin(2 * w * t) for t in days), sum(math.cos(2 * w * t) for t in days)) / (2 * w)
        c = [math.cos(w * (t - tau)) for t in days]
        s = [math.sin(w * (t - tau)) for t in days]
        cc, ss = sum(x * x for x in c), sum(x * x for x in s)
        yc, ys = sum(a * b for a, b in zip(y, c, strict=True)), sum(a * b for a, b in zip(y, s, strict=True))
        power = (yc * yc / cc if cc else 0.0) + (ys * ys / ss if ss else 0.0)
        out.append(power / total)
    return out


def periodogram_peak(days: list[float], values: list[float], min_period: float, max_period: float
                     ) -> PeriodogramPeak | None:
    """The highest Lomb-Scargle peak with its false-alarm probability, or None if too few points.

    The frequency grid is oversampled (`cyclic_method.oversampling` points per 1/span) so a peak is
    not missed between grid points. False-alarm probability: 1 - (1 - (1 - P)^((N - 3) / 2))^M
    with M = span x bandwidth independent frequencies (Horne & Baliunas 1986): the chance that noise
    alone gives a peak this high somewhere in the searched band.
    """
    method = load_table("timeline")["cyclic_method"]
    span = max(days) - min(days)
    if len(days) < int(method["min_points"]) or span <= 0 or max_period <= min_period:
        return None
    f_lo, f_hi = 1 / max_period, 1 / min_period
    step = 1 / (float(method["oversampling"]) * span)
    n_freq = max(2, math.ceil((f_hi - f_lo) / step) + 1)
    freqs = [f_lo + i * (f_hi - f_lo) / (n_freq - 1) for i in range(n_freq)]
    periods = [1 / f for f in freqs]
    powers = lomb_scargle(days, values, periods)
    best = max(range(n_freq), key=lambda i: powers[i])
    power = min(powers[best], 1.0)
    independent = max(1.0, span * (f_hi - f_lo))
    single = (1 - power) ** ((len(values) - 3) / 2)
    fap = 1 - (1 - single) ** independent
    return PeriodogramPeak(periods[best], power, min(max(fap, 0.0), 1.0))


@dataclass(frozen=True)
class CyclicSuspicion:
    """Whether a series looks like cyclic neutropenia, with the period found and the evidence.

    `nadirs` lists every nadir seen (one per episode, episodes never spanning a sampling gap longer
    than `cyclic_method.window_split_gap_days`) and `nadir_spacing_days` the gaps between them;
    `window` is the densely sampled stretch (first and last draw) the verdict was judged on, None when
    no stretch was sampled densely enough.
    """

    status: str  # "suspected" | "not_suspected" | "insufficient_data"
    analyte: str
    period_days: float | None
    power: float | None
    false_alarm_probability: float | None
    nadirs: list[tuple[datetime, float]]
    nadir_spacing_days: list[int]
    evidence: list[str]
    method: str
    source: str
    window: tuple[datetime, datetime] | None = None


_CYCLIC_METHOD = (
    "Judged on a densely sampled window (draws at most every few days for >= 3 shortest cycles, as "
    "CBCs 2-3x/week for 6-8 weeks give), where two independent views must agree. (1) Lomb-Scargle "
    "periodogram of the ANC: it fits sinusoids directly at the irregular draw times (no interpolation "
    "onto a grid, which would invent values between draws), gives the period with the most explained "
    "variance and a false-alarm probability. (2) Nadir spacing: the nadir of each neutropenia episode "
    "is dated and the gaps between nadirs must be regular and inside the cyclic band. The periodogram "
    "alone can be driven by one deep fall or by a trend; nadir spacing alone cannot tell a clock from "
    "a few unrelated falls. Sparse visits outside the window cannot show a cycle (a whole nadir fits "
    "in the gaps between them), so their nadirs only count as support when they lie near a whole "
    "number of periods from the window's nadirs, and never overturn the window's verdict."
)


@dataclass(frozen=True)
class _Window:
    """The cyclic judgement of one densely sampled stretch of draws."""

    points: list[Point]
    peak: PeriodogramPeak | None
    nadirs: list[tuple[datetime, float]]
    median_draw_gap: float
    evidence: list[str]
    reasons: list[str]


def _runs(pts: list[Point], split_days: float) -> list[list[Point]]:
    """Time-ordered points cut wherever two consecutive draws are more than `split_days` apart."""
    runs: list[list[Point]] = []
    for p in pts:
        if runs and (p.time - runs[-1][-1].time).total_seconds() / 86400 <= split_days:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _days_from(pts: list[Point]) -> list[float]:
    return [(p.time - pts[0].time).total_seconds() / 86400 for p in pts]


def _median_draw_gap(days: list[float]) -> float:
    return _median([b - a for a, b in zip(days, days[1:], strict=False)]) if len(days) > 1 else math.inf


def _dense_enough(run: list[Point], rule: dict, method: dict) -> bool:
    """Enough draws, close enough together, over at least `min_cycles` of the shortest period."""
    days = _days_from(run)
    return (len(run) >= int(method["min_points"]) and days[-1] >= int(rule["min_cycles"]) * float(
        rule["min_period_days"]) and _median_draw_gap(days) <= float(method["max_median_sampling_gap_days"]))


def _nadirs(analyte: str, pts: list[Point]) -> list[tuple[datetime, float]]:
    return [(e.nadir_time, e.nadir_value) for e in episodes(analyte, pts)]


@dataclass(frozen=True)
class _Spacing:
    """The nadirs of one dense window and what their spacing says against a clock (`reasons`)."""

    found: list[tuple[datetime, float]]  # every episode nadir in the window
    nadirs: list[tuple[datetime, float]]  # those dated (an edge low not at nadir depth is not)
    gaps: list[int]
    median_spacing: float | None
    depth: float
    reasons: list[str]


def _spacing(analyte: str, pts: list[Point], rule: dict, method: dict, median_gap: float) -> _Spacing:
    """Nadir count and regularity of one dense window: the half of the judgement that needs no periodogram.

    Kept apart so that `could_be_cyclic` can rule a series out with exactly the tests the full judgement
    applies, without paying for the periodogram.
    """
    lo, hi = float(rule["min_period_days"]), float(rule["max_period_days"])
    need, tol = int(rule["min_cycles"]), float(method["spacing_tolerance_fraction"])
    # A low result at the window's first or last draw may not be the bottom (the count may have been
    # lower before the window, or still be falling after it): its date is unknown unless it is already
    # at nadir depth (ANC < `cyclic.nadir_anc_below` lasts only 3-5 days, so it dates the nadir).
    edge, depth = {pts[0].time, pts[-1].time}, float(rule["nadir_anc_below"])
    found = _nadirs(analyte, pts)
    nadirs = [n for n in found if n[0] not in edge or n[1] < depth]
    gaps = [(b[0] - a[0]).days for a, b in zip(nadirs, nadirs[1:], strict=False)]
    reasons: list[str] = []
    if len(nadirs) < need:
        reasons.append(f"fewer than {need} nadirs")
    median_spacing = _median([float(g) for g in gaps]) if gaps else None
    if median_spacing is not None:
        if not lo <= median_spacing <= hi:
            reasons.append(f"median nadir spacing {median_spacing:.0f} days is outside {lo:g}-{hi:g} days")
        # A nadir is only dated to within about one draw interval, so each gap may also be off by that.
        allowed = tol * median_spacing + median_gap
        irregular = [g for g in gaps if abs(g - median_spacing) > allowed]
        if irregular:
            reasons.append(f"irregular nadir spacing ({', '.join(map(str, irregular))} days off the median "
                           f"{median_spacing:.0f} by more than {tol:.0%} + one draw interval)")
    return _Spacing(found, nadirs, gaps, median_spacing, depth, reasons)


def _judge_window(analyte: str, pts: list[Point], rule: dict, method: dict, max_fap: float) -> _Window:
    """Periodogram and nadir spacing of one dense window; `reasons` is empty when both say cyclic."""
    lo, hi = float(rule["min_period_days"]), float(rule["max_period_days"])
    tol = float(method["spacing_tolerance_fraction"])
    days = _days_from(pts)
    span, median_gap = days[-1], _median_draw_gap(days)
    factor = float(method["search_period_factor"])
    peak = periodogram_peak(days, [p.value for p in pts], lo / factor, min(hi * factor, max(span / 2, hi)))
    sp = _spacing(analyte, pts, rule, method, median_gap)
    evidence = [f"judged on {len(pts)} results from {pts[0].time.date().isoformat()} to "
                f"{pts[-1].time.date().isoformat()} ({span:.0f} days, median {median_gap:.1f} days apart)"]
    evidence += [f"low result at the window's edge not dated as a nadir ({t.date().isoformat()}: {v:.2f}, "
                 f"not below {sp.depth:g}; the bottom may lie outside the window)"
                 for t, v in sp.found if (t, v) not in sp.nadirs]
    if peak is not None:
        evidence.append(f"Lomb-Scargle peak at {peak.period_days:.1f} days (power {peak.power:.2f}, "
                        f"false-alarm probability {peak.false_alarm_probability:.2g}) from {len(pts)} results "
                        f"over {span:.0f} days")
    evidence.append(f"{len(sp.nadirs)} nadir(s) in the window: " + ", ".join(
        f"{t.date().isoformat()} ({v:.2f})" for t, v in sp.nadirs) if sp.nadirs else "no low results in the window")
    if sp.gaps:
        evidence.append("days between nadirs: " + ", ".join(str(g) for g in sp.gaps))
    reasons = list(sp.reasons)
    median_spacing = sp.median_spacing
    if peak is None:
        reasons.append("no periodogram")
    else:
        if not lo <= peak.period_days <= hi:
            reasons.append(f"strongest rhythm {peak.period_days:.1f} days is outside {lo:g}-{hi:g} days")
        if peak.false_alarm_probability > max_fap:
            reasons.append(f"periodogram peak not significant (false-alarm probability "
                           f"{peak.false_alarm_probability:.2g} > {max_fap:.2g})")
        if median_spacing is not None and abs(peak.period_days - median_spacing) > tol * median_spacing:
            reasons.append(f"periodogram ({peak.period_days:.1f} d) and nadir spacing ({median_spacing:.0f} d) "
                           "disagree")
    return _Window(pts, peak, sp.nadirs, median_gap, evidence, reasons)


def _outside_nadirs(window: _Window, others: list[tuple[datetime, float]], tol: float) -> list[str]:
    """How nadirs of sparse visits outside the window line up with the window's rhythm (evidence only).

    Each is measured from the nearest nadir of the window and compared with the nearest whole number
    k >= 1 of periods. The allowance is `spacing_tolerance_fraction` of a period (a low visit can fall
    anywhere in the days of the nadir) plus k times the period's own uncertainty, taken as one draw
    interval spread over the cycles between the window's first and last nadir (each nadir is dated
    only to the nearest draw). Once that allowance reaches half a period any date would fit, so such
    a nadir is reported as too far to check. One off the rhythm is reported but does not overturn the
    window: the period drifts by a day or two per cycle over months, and an infection can lower a
    count off the rhythm.
    """
    if not others or len(window.nadirs) < 2 or window.peak is None:
        return []
    period = window.peak.period_days
    per_cycle = window.median_draw_gap / (len(window.nadirs) - 1)
    groups: dict[str, list[str]] = {"fit": [], "off": [], "far": []}
    for t, _ in others:
        ref = min(window.nadirs, key=lambda n: abs((n[0] - t).total_seconds()))[0]
        d = abs((ref - t).total_seconds()) / 86400
        k = max(1, round(d / period))
        allowance = tol * period + k * per_cycle
        text = f"{t.date().isoformat()} ({d:.0f} d from {ref.date().isoformat()}, {k} x {period:.1f} "
        if allowance >= period / 2:
            groups["far"].append(text + f"± {allowance:.0f} d)")
        elif abs(d - k * period) <= allowance:
            groups["fit"].append(text + f"{d - k * period:+.0f} d)")
        else:
            groups["off"].append(text + f"{d - k * period:+.0f} d, allowed ± {allowance:.0f} d)")
    heads = {"fit": "at a whole number of periods (consistent with the rhythm)",
             "off": "off the rhythm (reported, not held against it: sparse visits cannot date a cycle)",
             "far": "too many cycles away to check against the window's period"}
    return [f"{len(v)} nadir(s) outside the window {heads[k]}: " + "; ".join(v) for k, v in groups.items() if v]


def _windows(points: list[Point], rule: dict, method: dict) -> tuple[list[Point], list[list[Point]], list[list[Point]]]:
    """The series in time order, cut into runs at long sampling gaps, and the runs dense enough to judge."""
    pts = sorted(points, key=lambda p: p.time)
    runs = _runs(pts, float(method["window_split_gap_days"]))
    return pts, runs, [run for run in runs if _dense_enough(run, rule, method)]


def could_be_cyclic(points: list[Point], analyte: str = "neutrophils") -> bool:
    """False when `cyclic_neutropenia` cannot say "suspected": no dense window has regular nadirs.

    "Suspected" needs one dense window with no reason against it, and the nadir count and spacing are
    some of those reasons; they are checked here by the same code (`_spacing`) without the periodogram,
    which costs about a millisecond per series in pure Python. The population screen judges thousands
    of candidate series where many persons have intermittent lows, and only needs the suspected ones.
    """
    rule = load_table("timeline")["cyclic"]
    method = load_table("timeline")["cyclic_method"]
    pts, _, dense = _windows(points, rule, method)
    return len(pts) >= 2 and any(
        not _spacing(analyte, run, rule, method, _median_draw_gap(_days_from(run))).reasons for run in dense)


def cyclic_neutropenia(points: list[Point], analyte: str = "neutrophils") -> CyclicSuspicion:
    """Cyclic-neutropenia suspicion for one analyte's judged series (see `_CYCLIC_METHOD`).

    Cyclic neutropenia is diagnosed from serial CBCs 2-3 times a week for 6-8 weeks (clinical
    reference §8), and real histories mix such a block with sparse clinic visits months apart. A
    sparse visit that happens to fall on a nadir makes a gap of several periods between nadirs, which
    says nothing against a clock (the cycles in between were not sampled) but breaks any test of
    regular spacing over the whole series. So the series is cut into windows at gaps longer than
    `cyclic_method.window_split_gap_days` (a gap that long can hide a whole nadir), and the cycle is
    judged inside each window with enough draws (>= `min_points`, median gap at most
    `max_median_sampling_gap_days`, spanning >= `cyclic.min_cycles` shortest periods). No such
    window: insufficient data.

    In a window, irregular sampling (missed draws, two draws one day) is why the period is not read
    off an FFT: the Lomb-Scargle periodogram handles uneven times natively, and nadir dates come from
    the episodes (islands of low results), so a missed draw shifts a nadir by a day or two but never
    creates one. A window is cyclic when: >= `min_cycles` nadirs; every gap between nadirs within
    `spacing_tolerance_fraction` of their median plus one median draw interval (a nadir is dated only
    to the nearest draw); the median gap and the periodogram's peak both within 14-35 days and
    agreeing within the same tolerance; and the peak's false-alarm probability at most
    `max_false_alarm_probability`, divided by the number of windows judged (Bonferroni: each window
    is one more chance for noise to look periodic). Suspected when a window is cyclic; nadirs outside
    it are then checked against whole multiples of its period, as evidence only.

    A 21-day rhythm that follows chemotherapy doses looks the same here; the history engine overrides
    it with the chemotherapy nadir pattern.
    """
    rule = load_table("timeline")["cyclic"]
    method = load_table("timeline")["cyclic_method"]
    need, lo = int(rule["min_cycles"]), float(rule["min_period_days"])
    tol, split = float(method["spacing_tolerance_fraction"]), float(method["window_split_gap_days"])
    source = f"{rule['source']}; {method['source']}"
    pts, runs, dense = _windows(points, rule, method)
    nadirs = sorted((n for run in runs for n in _nadirs(analyte, run)), key=lambda n: n[0])
    gaps = [(b[0] - a[0]).days for a, b in zip(nadirs, nadirs[1:], strict=False)]

    def result(status: str, evidence: list[str], win: _Window | None = None) -> CyclicSuspicion:
        peak = win.peak if win else None
        return CyclicSuspicion(status, analyte, round(peak.period_days, 1) if peak else None,
                               round(peak.power, 3) if peak else None,
                               peak.false_alarm_probability if peak else None,
                               nadirs, gaps, evidence, _CYCLIC_METHOD, source,
                               (win.points[0].time, win.points[-1].time) if win else None)

    if len(pts) < 2:
        return result("insufficient_data", ["fewer than two results"])
    if not dense:
        best = max(runs, key=len)
        days = _days_from(best)
        span = (pts[-1].time - pts[0].time).total_seconds() / 86400
        return result("insufficient_data", [
            f"{len(pts)} results over {span:.0f} days; the longest stretch without a gap over {split:g} days "
            f"has {len(best)} results over {days[-1]:.0f} days, median {_median_draw_gap(days):.1f} days apart: "
            f"needs >= {method['min_points']} results at a median of at most "
            f"{method['max_median_sampling_gap_days']} days apart over >= {need} x {lo:g} days "
            "(CBCs 2-3x/week for 6-8 weeks)"])
    max_fap = float(method["max_false_alarm_probability"]) / len(dense)
    judged = [_judge_window(analyte, run, rule, method, max_fap) for run in dense]
    win = min(judged, key=lambda w: (bool(w.reasons), w.peak.false_alarm_probability if w.peak else 1.0))
    evidence = list(win.evidence)
    if len(judged) > 1:
        evidence.append(f"{len(judged)} densely sampled windows judged; each needs a false-alarm probability "
                        f"<= {max_fap:.2g} (Bonferroni); {sum(not w.reasons for w in judged)} look cyclic")
    deep = [v for _, v in win.nadirs if v < float(rule["nadir_anc_below"])]
    if win.nadirs:
        evidence.append(f"{len(deep)} of {len(win.nadirs)} nadirs below {rule['nadir_anc_below']} x10^9/L "
                        "(typical depth of cyclic neutropenia)")
    if win.reasons:
        return result("not_suspected", evidence + ["not cyclic: " + "; ".join(win.reasons)], win)
    start, end = win.points[0].time, win.points[-1].time
    return result("suspected", evidence + _outside_nadirs(
        win, [n for n in nadirs if not start <= n[0] <= end], tol), win)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ---------------------------------------------------------------------------------------------
# Chemotherapy nadir


@dataclass(frozen=True)
class ChemoCycle:
    """One chemotherapy dose and what the counts did after it (days counted from the dose date)."""

    dose_date: date
    n_results: int
    nadir_value: float | None
    nadir_day: int | None
    fell: bool
    recovery_day: int | None
    status: str  # typical | early_nadir | late_nadir | no_fall | not_recovered | recovery_not_seen | no_data
    note: str


@dataclass(frozen=True)
class ChemoNadirPattern:
    status: str  # consistent | not_consistent | no_data | no_chemotherapy
    analyte: str
    cycles: list[ChemoCycle]
    evidence: list[str]
    source: str


def _day(t: datetime, d: date) -> int:
    return (t.date() - d).days


def chemo_cycle(dose: date, next_dose: date | None, points: list[Point]) -> ChemoCycle:
    """The nadir and recovery after one dose, looking up to day 21 (+ grace) or the next dose."""
    rule = load_table("timeline")["chemotherapy_nadir"]
    grace = int(load_table("timeline")["chemotherapy_method"]["recovery_grace_days"])
    n_from, n_to, rec_by = int(rule["nadir_from_day"]), int(rule["nadir_to_day"]), int(rule["recovery_by_day"])
    end = rec_by + grace
    if next_dose is not None:
        end = min(end, (next_dose - dose).days)
    window = sorted((p for p in points if 0 <= _day(p.time, dose) <= end), key=lambda p: p.time)
    if not window:
        return ChemoCycle(dose, 0, None, None, False, None, "no_data", f"no results in days 0-{end}")
    nadir = min(window, key=lambda p: (p.value, p.time))
    nd = _day(nadir.time, dose)
    if not nadir.low:
        return ChemoCycle(dose, len(window), nadir.value, nd, False, None, "no_fall",
                          f"lowest {nadir.value:.2f} on day {nd}, not low")
    after = [p for p in window if p.time > nadir.time]
    recovered = next((p for p in after if not p.low), None)
    rday = _day(recovered.time, dose) if recovered else None
    if nd < n_from:
        status, note = "early_nadir", f"low on day {nd}, before day {n_from}"
    elif nd > n_to:
        status, note = "late_nadir", f"nadir on day {nd}, after day {n_to}"
    elif recovered is not None:
        status, note = "typical", f"nadir day {nd}, recovered by day {rday}"
    elif after:
        status, note = "not_recovered", f"nadir day {nd}, still low on day {_day(after[-1].time, dose)}"
    else:
        status, note = "recovery_not_seen", f"nadir day {nd}; no later result before day {end}"
    return ChemoCycle(dose, len(window), nadir.value, nd, True, rday, status, note)


def chemotherapy_nadir(dose_dates: list[date], points: list[Point], analyte: str = "neutrophils"
                       ) -> ChemoNadirPattern:
    """Does each chemotherapy dose show the expected fall on day 7-14 and recovery by about day 21?

    Consistent when at least one cycle is typical and typical cycles are at least half of the cycles
    with results. A fall that fits this pattern points to the chemotherapy, not a new cause; a nadir
    outside it, or no recovery by day ~21, is worth a closer look (and may hold the next cycle).
    """
    rule = load_table("timeline")["chemotherapy_nadir"]
    source = f"{rule['source']}; {load_table('timeline')['chemotherapy_method']['source']}"
    doses = sorted(set(dose_dates))
    if not doses:
        return ChemoNadirPattern("no_chemotherapy", analyte, [], [], source)
    cycles = [chemo_cycle(d, doses[i + 1] if i + 1 < len(doses) else None, points) for i, d in enumerate(doses)]
    with_data = [c for c in cycles if c.status != "no_data"]
    typical = [c for c in with_data if c.status == "typical"]
    evidence = [f"{c.dose_date.isoformat()}: {c.note}" for c in cycles]
    if not with_data:
        return ChemoNadirPattern("no_data", analyte, cycles, evidence, source)
    summary = (f"{len(typical)} of {len(with_data)} cycles with results show a fall on day "
               f"{rule['nadir_from_day']}-{rule['nadir_to_day']} and recovery by about day {rule['recovery_by_day']}")
    ok = bool(typical) and 2 * len(typical) >= len(with_data)
    return ChemoNadirPattern("consistent" if ok else "not_consistent", analyte, cycles, [summary, *evidence], source)


# ---------------------------------------------------------------------------------------------
# Drug timing and dechallenge


@dataclass(frozen=True)
class DrugTiming:
    """Days from a medicine's start to an episode's onset, and what happened after it stopped.

    A hint for the clinician, never a verdict: timing can support a drug cause but cannot prove it.
    """

    medicine: str
    start: date | None
    stop: date | None
    analyte: str
    episode_onset: datetime | None
    days_to_onset: int | None
    onset: str  # typical | earlier_than_typical | later_than_typical | before_start | after_stop | none | no_start
    dechallenge: str  # positive | recovered_before_stop | no_recovery_yet | no_results_after_stop | not_stopped | n/a
    days_stop_to_recovery: int | None
    hint: str
    source: str


def drug_timing(medicine: str, start: date | None, stop: date | None, analyte: str,
                eps: list[Episode], points: list[Point]) -> DrugTiming:
    """Onset timing (19-60 days typical of drug-induced agranulocytosis) and dechallenge for one medicine.

    The episode considered is the first one beginning on or after the start date within the
    association window (90 days); an episode already running when the medicine started is reported
    as such. Dechallenge is positive when that episode recovered on or after the stop date.
    """
    rule = load_table("timeline")["drug_timing"]
    lo, hi, window = (int(rule["typical_onset_min_days"]), int(rule["typical_onset_max_days"]),
                      int(rule["association_window_days"]))
    source = rule["source"]

    def out(onset: str, dechallenge: str, hint: str, ep: Episode | None = None, days: int | None = None,
            rec: int | None = None) -> DrugTiming:
        return DrugTiming(medicine, start, stop, analyte, ep.onset if ep else None, days, onset, dechallenge,
                          rec, hint, source)

    if start is None:
        return out("no_start", "n/a", f"{medicine}: no start date, so its timing cannot be checked")
    ordered = sorted(eps, key=lambda e: e.onset)
    running = next((e for e in ordered if _day(e.onset, start) < 0
                    and (e.recovery is None or _day(e.recovery, start) > 0)), None)
    ep = next((e for e in ordered if 0 <= _day(e.onset, start) <= window), None)
    if ep is None:
        if running is not None:
            return out("before_start", "n/a", f"{analyte} was already low before {medicine} started "
                       f"(episode from {running.onset.date().isoformat()}): the medicine did not start it", running)
        return out("none", "n/a", f"no low {analyte} episode began within {window} days of starting {medicine}")
    days = _day(ep.onset, start)
    if stop is not None and ep.onset.date() > stop:
        return out("after_stop", "n/a", f"{analyte} fell {days} days after {medicine} started but after it was "
                   f"stopped on {stop.isoformat()}", ep, days)
    if days < lo:
        onset, phrase = "earlier_than_typical", f"earlier than the typical {lo}-{hi} days"
    elif days > hi:
        onset, phrase = "later_than_typical", f"later than the typical {lo}-{hi} days"
    else:
        onset, phrase = "typical", f"within the {lo}-{hi} days typical of drug-induced agranulocytosis"
    hint = (f"Low {analyte} began {days} days after {medicine} was started "
            f"({ep.onset.date().isoformat()}), {phrase}.")
    rec: int | None = None
    if stop is None:
        dechallenge = "not_stopped"
        hint += " It has not been stopped, so there is no dechallenge to judge."
    elif ep.recovery is not None and ep.recovery.date() >= stop:
        dechallenge, rec = "positive", (ep.recovery.date() - stop).days
        hint += f" Counts recovered {rec} days after it was stopped (positive dechallenge)."
    elif ep.recovery is not None:
        dechallenge = "recovered_before_stop"
        hint += " Counts recovered while it was still being taken, which argues against it."
    else:
        later = [p for p in points if p.time.date() > stop]
        if later:
            dechallenge = "no_recovery_yet"
            hint += (f" Still low {_day(max(p.time for p in later), stop)} days after it was stopped "
                     "(no recovery yet).")
        else:
            dechallenge = "no_results_after_stop"
            hint += " No results after it was stopped."
    hint += " Timing is a hint for the clinician, not proof of cause."
    return out(onset, dechallenge, hint, ep, days, rec)
