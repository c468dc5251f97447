"""The rules of `rules/` as relational steps, each an Ibis expression any backend runs.

    raw --validate--> accepted rows (canonical units) + rejects (with reasons)
        --draws-->    one row per draw: duplicates found (bit sums), differential inputs pivoted
        --grade-->    graded: one row per person, draw and analyte, absolute, flagged and graded
        --timeline--> episodes (gaps and islands), chronic cases, drug-associated episodes
        --persons-->  per-person flags

Each function mirrors one per-patient function and says which; the parity test holds them equal.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, get_args

import ibis
import ibis.expr.operations as ops
import ibis.expr.types as ir

from ..io.result import RESULT_KEY
from ..knowledge import load_table
from ..model import ANALYTES, DIFFERENTIAL_ANALYTES, FINDING_CODES, Sex
from ..rules.findings import LOW_FINDING
from ..rules.ranges import profile_for, profile_names
from ..rules.timeline import chronic_rule
from ..units import plausibility
from . import relations as rel
from .inputs import ABOVE_WHITESPACE, ambiguous_comma, strip_text, with_numbers

#: A percentage is parts per hundred (rules.differential derives WBC x % / 100).
PERCENT = 100
#: model.Patient.age_at: days / 365.25.
DAYS_PER_YEAR = 365.25
_US_PER_DAY = int(timedelta(days=1) / timedelta(microseconds=1))
#: Years per summary age band (decades: a reporting choice, not a clinical threshold).
AGE_BAND_YEARS = 10


def days_between(start: ir.TimestampValue, end: ir.TimestampValue) -> ir.IntegerValue:
    """`(end - start).days` of Python datetimes: whole days elapsed, floored."""
    return end.delta(start, unit="microsecond") // _US_PER_DAY


# ---------------------------------------------------------------------------------------------
# 1. validate: request.parse_observation row by row


#: Only the whitespace Ibis's strip() removes, as a regular expression (TRIM with a character set costs
#: DuckDB about six times more than this match).
_BLANK = "^[ \t\n\r\x0b\x0c]*$"


#: The person's columns `persons_of` aggregates besides the sex, when the input has them.
PERSON_COLUMNS: tuple[str, ...] = ("birth_date", "age_years", "duffy_null")


def distinct_keys(raw: ir.Table) -> ir.Table:
    """Every distinct (analyte, loinc, unit, sex) spelling, and the blank (whitespace-only) patient ids: the
    few values `relations` asks the per-patient functions about. A blank id is matched here once, so that
    each later pass over the rows tests membership in this (almost always empty) list instead of running a
    regular expression. `has_<column>` says whether rows carry each of PERSON_COLUMNS (a column the
    input lacks is NULL throughout, and `draws_of` then does not aggregate it). `n` counts the rows of each
    spelling, so the rows read are their sum: no second query over the input (a job on Spark) to count it."""
    # a blank id starts below ABOVE_WHITESPACE (as every character `_BLANK` allows does, and '' is below it):
    # only those ids are matched (the match on every id was two thirds of this query's time)
    maybe = raw.patient_id < ABOVE_WHITESPACE
    blank = ibis.cases((maybe & raw.patient_id.re_search(_BLANK), raw.patient_id), else_=ibis.null("string"))
    has = {f"has_{c}": raw[c].notnull() for c in PERSON_COLUMNS}
    k = raw.select("analyte", "loinc", "unit", "sex", blank_id=blank, **has)
    return k.group_by(k.columns).agg(n=k.count())


def _checks(j: ir.Table, blank: list[str]) -> list[tuple[Any, Any, Any]]:
    """request.parse_observation's checks in its order: (fails, reason, reason_code)."""
    limits = plausibility()
    code_problem = j.c_reason_code.isin(["unknown_analyte", "unknown_code"])
    missing_id = j.patient_id.isnull() | j.patient_id.isin(blank) if blank else j.patient_id.isnull()
    return [
        (missing_id, "missing patient_id", "missing_patient"),
        (code_problem, j.c_reason, j.c_reason_code),
        (j.value.isnull(), "missing value", "missing_value"),
        *([(ambiguous_comma(strip_text(j.value)), "value is ambiguous: the comma may separate thousands or "
            "decimals; send the number without a thousands separator, with a decimal point", "bad_value")]
          if j.value.type().is_string() else []),
        (j.number.isnull(), "value is not a number", "bad_value"),
        (j.c_reason.notnull(), j.c_reason, j.c_reason_code),
        (j.number.isnan() | j.number.isinf(), "value is not a finite number", "bad_value"),
        (j.value_c < limits["min_value"], "value is negative", "implausible"),
        (j.c_percent & (j.value_c > limits["max_percent"]), "percentage is above 100%", "implausible"),
        ((j.c_analyte == "wbc") & ~j.c_percent & (j.value_c > limits["max_wbc"]),
         f"wbc above {limits['max_wbc']:g} x10^9/L is implausible; check the unit", "implausible"),
        (not_a_bound(j.low, j.lab_low), "reference range low is not a finite number", "bad_range"),
        (not_a_bound(j.high, j.lab_high), "reference range high is not a finite number", "bad_range"),
        (j.lab_low.notnull() & j.lab_high.notnull() & (j.lab_low > j.lab_high), "reference range low is above high",
         "bad_range"),
        (j.time.isnull(), "missing or unparseable time", "bad_time"),
        (j.s_reason.notnull(), j.s_reason, "bad_sex"),
    ]


def not_a_bound(given: ir.Value, parsed: ir.FloatingValue) -> ir.BooleanValue:
    """A reference-range bound was given but is not a finite number (request._bound rejects its row)."""
    return given.notnull() & (parsed.isnull() | parsed.isnan() | parsed.isinf())


def validate(raw: ir.Table, codes: ir.Table, sexes: ir.Table, blank: list[str], in_steps: bool = True) -> ir.Table:
    """Every raw row with its canonical analyte, value in canonical units, lab range, and `ok`; `in_steps`:
    how text values are parsed (`inputs.with_numbers`, `Engine.parse_in_steps`).

    `ok` passes every check of `_checks`: the per-code and per-sex ones come answered with the codes
    (`c_ok`, `c_max`) and sexes (`s_ok`), so each row costs a few comparisons; the reasons themselves are
    two CASE chains worked out in `rejects_of` for the few failing rows only, not for every row.
    """
    k = raw.mutate(_ak=raw.analyte.fill_null(""), _ck=raw.loinc.fill_null(""), _uk=raw.unit.fill_null(""),
                   _sk=raw.sex.fill_null(""))
    j = k.left_join(codes, ["_ak", "_ck", "_uk"]).left_join(sexes, "_sk")
    # a bound's comparator is dropped, as request._bound drops it
    j = with_numbers(j, {"value": "number", "low": "low_n", "high": "high_n"}, in_steps=in_steps)
    j = j.mutate(comparator=j.number_comparator, analyte_c=j.c_analyte, percent=j.c_percent,
                 value_c=j.number * j.c_factor, lab_low=j.low_n * j.c_factor, lab_high=j.high_n * j.c_factor,
                 sex_c=j.s_sex)
    named = j.patient_id.notnull() & ~j.patient_id.isin(blank) if blank else j.patient_id.notnull()
    finite = j.number.notnull() & ~j.number.isnan() & ~j.number.isinf()
    plausible = (j.value_c >= plausibility()["min_value"]) & (j.value_c <= j.c_max)
    range_ok = ~(j.lab_low > j.lab_high).fill_null(False) & ~not_a_bound(j.low, j.lab_low) & \
        ~not_a_bound(j.high, j.lab_high)
    ok = j.c_ok & j.s_ok & named & finite & plausible & range_ok & j.time.notnull()
    return j.mutate(ok=ok.fill_null(False))


def rejects_of(checked: ir.Table, blank: list[str]) -> ir.Table:
    r = checked.filter(~checked.ok)
    checks = _checks(r, blank)
    reason = ibis.cases(*[(c, why) for c, why, _ in checks], else_=ibis.null("string"))
    reason_code = ibis.cases(*[(c, code) for c, _, code in checks], else_=ibis.null("string"))
    return r.select(_row=r._row, source=r._src, patient_id=r.patient_id, time=r.time, analyte=r.analyte,
                    loinc=r.loinc, value=r.value.cast("string"), unit=r.unit, reason=reason,
                    reason_code=reason_code)


def accepted_of(checked: ir.Table) -> ir.Table:
    """The rows that passed `validate`, in canonical units."""
    a = checked.filter(checked.ok)
    # rules.differential.derive_draw: a WBC sent per microlitre (a conversion factor below 1) that comes out
    # under the smallest value an analyser reports is a unit slip: kept (accepted) but neither graded nor
    # used to derive the differential
    slip = (a.value_c > 0) & (a.value_c < a.c_slip_below)
    return a.select(_row=a._row, _src=a._src, patient_id=a.patient_id, time=a.time, analyte=a.analyte_c,
                    percent=a.percent, bit=a.c_bit, value=a.value_c, comparator=a.comparator, lab_low=a.lab_low,
                    lab_high=a.lab_high, sex=a.sex_c, birth_date=a.birth_date, age_years=a.age_years,
                    duffy_null=a.duffy_null, slip=slip.fill_null(False), bound=bound_code(a.comparator))


#: A reported comparator as a number, so a draw aggregates it as it does values: 0 none; the low two bits
#: its direction (1 an upper bound, 2 a lower bound: rules.differential._joint_comparator reads only the
#: first character), 4 "or equal". OR-ed over the inputs of a derived count, the direction bits are 1 or 2
#: when every bound points one way and 3 when they pull both ways (no direction).
_BOUND_CODES: dict[str, int] = {"<": 1, ">": 2, "<=": 5, ">=": 6}
_DIRECTION_BITS = 3


def bound_code(comparator: ir.StringValue) -> ir.IntegerValue:
    return ibis.cases(*[(comparator == c, n) for c, n in _BOUND_CODES.items()], else_=0)


def comparator_of(code: ir.IntegerValue) -> ir.StringValue:
    """The comparator text of a `bound_code` (or of a direction: 1 '<', 2 '>'); NULL for none or both ways."""
    return ibis.cases(*[(code == n, c) for c, n in _BOUND_CODES.items()], else_=ibis.null("string"))


def joint_comparator(*codes: ir.IntegerValue) -> ir.StringValue:
    """rules.differential._joint_comparator over the `bound_code`s of the counts a value is derived from."""
    return comparator_of(functools.reduce(operator.or_, [c & _DIRECTION_BITS for c in codes]))


#: rules.counts.directed on an engine without nextafter: a reported `<x` is compared as x less one part in
#: 2^52 (one or two ulps below x: no cut-off lies in between), `>x` as just above x.
_ULP = 2.0 ** -52
_TINY = 2.2250738585072014e-308  # `>0`: the smallest positive normal double


def directed(value: ir.FloatingValue, comparator: ir.StringValue) -> ir.FloatingValue:
    """rules.counts.directed: `<x` counts as just below x, `>x` just above, `<=x`/`>=x` as x itself, so every
    cut-off test reads the bound as the lab meant it and the grade is the mildest the bound allows."""
    return ibis.cases(((comparator == "<") & (value > 0), value - value * _ULP),
                      ((comparator == ">") & (value > 0), value + value * _ULP),
                      ((comparator == ">") & (value == 0), _TINY), else_=value)


def bucket_of(patient_id: ir.StringValue, buckets: int) -> ir.IntegerValue:
    """Which of `buckets` buckets a person's rows go to (every rule is per person, so buckets never meet)."""
    return (patient_id.hash() % buckets).abs().fill_null(0)


#: The stated sexes in text order, so that the largest rank is the largest text: a person's sex is the
#: maximum stated one, aggregated as a number (Spark aggregates a text column by sorting every row).
STATED_SEXES: tuple[str, ...] = tuple(sorted(s for s in get_args(Sex) if s != "unknown"))


def _sex_of_rank(rank: ir.IntegerValue) -> ir.StringValue:
    return ibis.cases(*[(rank == i, sex) for i, sex in enumerate(STATED_SEXES)], else_="unknown")


def persons_of(obs: ir.Table, person: frozenset[str]) -> ir.Table:
    """One row per person from the accepted rows: a stated sex wins over 'unknown'; birth date, age and Duffy
    status if any row has them (`person` names the columns the input has: the others are constants, not
    aggregates); `n_results` (accepted rows) lets the reconciliation add up without another pass.

    From the rows, not from the draws: this hash table has one small entry per person, while the person's
    columns carried on every draw grew the draws' table, one entry per draw, which spills at 30M rows
    under a 2GB limit (measured on a quiet machine: persons and draws 10.6 -> 9.8 CPU s, 1.64 -> 1.26 GB
    spilled; the screen about 5% faster at 30M, the same at 3M and 10M)."""
    known = ibis.cases(*[(obs.sex == sex, rank) for rank, sex in enumerate(STATED_SEXES)], else_=ibis.null("int64"))
    held = {"sex": (_sex_of_rank(known.max()), ibis.literal("unknown")),
            "birth_date": (obs.birth_date.max(), ibis.null("date")),
            "age_years": (obs.age_years.max(), ibis.null("float64")),
            "duffy_null": (obs.duffy_null.fill_null(False).max(), ibis.literal(False))}
    return obs.group_by("patient_id").agg(
        **{name: agg if name in person else absent for name, (agg, absent) in held.items()}, n_results=obs.count())


# ---------------------------------------------------------------------------------------------
# 2. grade: rules.counts.evaluate_draw + rules.findings over every draw


@dataclass(frozen=True)
class Draws:
    """`draws_of` in two halves: `aggregate` is what the screen keeps (materialises), and `complete` adds to
    what was kept the columns that are constant for this input (slots it lacks), which are never stored."""

    aggregate: ir.Table
    constant: dict[str, ir.Value]
    columns: tuple[str, ...]

    def complete(self, kept: ir.Table) -> ir.Table:
        """The kept aggregate with every column of `draws_of`, in one order on every input."""
        return (kept.mutate(**self.constant) if self.constant else kept).select("patient_id", "time", *self.columns)


def draws_of(obs: ir.Table, present: frozenset[int], bounds: bool = False) -> Draws:
    """The draws (patient, time) with a derivation to do or a duplicate to settle, by one hash aggregation
    per draw instead of a sort of every result.

    `has_dup`: some (analyte, percent) occurs twice in the draw. Each accepted result carries the bit of
    its slot (an accepted code always has one), so the draw has fewer distinct bits in their OR than
    results exactly when a slot is filled twice. `derives`: the draw has a derivation to do (a
    percentage, or absolute segments). No other draw is used later (the persons come from the rows,
    `persons_of`), so no other is kept: a third of the draws of the benchmark's input.
    The other columns are what rules.differential.derive_draw reads: which absolute counts were
    measured (`mask`), the WBC, segments, bands and every percentage. They are plain maxima, right only
    where each slot holds one result: when `has_dup` is found, the screen removes the superseded rows
    (`superseded_of`) and aggregates again. `present` holds the slot bits the input uses (from the
    distinct codes and units): an absent slot is a constant NULL, not an aggregate over every row, and
    is added by `Draws.complete` to what was kept, so it is never stored. With `bounds` (the values are text, so some may be
    reported as '<x' or '>x'), each slot's `bound_code` too, for the direction of a count derived from
    it. A WBC unit slip is no WBC here. Each aggregate is state in a hash table of one entry per draw,
    and at 30M rows under a 2GB limit that table is what spills (docs/population.md has the measurements).
    """
    def value(analyte: str, percent: bool, column: str = "value") -> Any:
        bit = rel.slot_bit(analyte, percent)
        if bit not in present:
            return ibis.null("float64") if column == "value" else ibis.literal(0)
        where = (obs.bit == bit) & ~obs.slip if analyte == "wbc" else obs.bit == bit
        agg = obs[column].max(where=where)
        return agg if column == "value" else agg.fill_null(0)  # a slot the draw lacks has no bound

    percent_bits = sum(b for b in (rel.slot_bit(a, True) for a in DIFFERENTIAL_ANALYTES) if b in present)
    aggs: dict[str, Any] = {"mask": obs.bit.bit_or(), "wbc": value("wbc", False),
                            "abs_segs": value("segmented_neutrophils", False), "abs_bands": value("bands", False)}
    aggs.update({f"pct_{a}": value(a, True) for a in DIFFERENTIAL_ANALYTES})
    if bounds:
        aggs.update({"b_wbc": value("wbc", False, "bound"), "b_segs": value("segmented_neutrophils", False, "bound"),
                     "b_bands": value("bands", False, "bound")})
        aggs.update({f"bp_{a}": value(a, True, "bound") for a in DIFFERENTIAL_ANALYTES})
    aggs["n"] = obs.count()
    constant = {name: v for name, v in aggs.items() if isinstance(v.op(), ops.Literal)}
    d = obs.group_by(["patient_id", "time"]).agg(**{n: v for n, v in aggs.items() if n not in constant})
    derives = (d.mask & percent_bits) != 0
    if "abs_segs" not in constant:
        derives = derives | d.abs_segs.notnull()
    d = d.mutate(has_dup=bit_count(d.mask) != d.n, derives=derives)
    return Draws(aggregate=d.filter(d.has_dup | d.derives), constant=constant,
                 columns=(*aggs, "has_dup", "derives"))


@ibis.udf.scalar.builtin
def bit_count(x: int) -> int:  # type: ignore[empty-body]
    """The number of set bits (`bit_count` in DuckDB and in Spark SQL)."""


def superseded_of(obs: ir.Table, draws: ir.Table) -> ir.Table:
    """The results `rules.differential._latest_by_analyte` does not use: of two results for one analyte in
    one draw (`io.result.RESULT_KEY`), the earlier in reading order. Only draws flagged `has_dup` are
    ranked, so a clean warehouse is never sorted."""
    dup = draws.filter(draws.has_dup).select("patient_id", "time")
    o = obs.semi_join(dup, ["patient_id", "time"])
    w = ibis.window(group_by=[o[c] for c in RESULT_KEY], order_by=ibis.desc(o._row))
    o = o.mutate(_rank=ibis.row_number().over(w))
    return o.filter(o._rank > 0).drop("_rank")


def without(obs: ir.Table, superseded: ir.Table) -> ir.Table:
    """The accepted rows minus the superseded ones (by source and reading position)."""
    return obs.anti_join(superseded.select("_src", "_row"), ["_src", "_row"])


def superseded_rejects(superseded: ir.Table) -> ir.Table:
    """Superseded rows as rejects, reason_code "duplicate". Exact duplicates (the same value and unit again:
    `io.result.DUPLICATE_KEY`) are the part of these the readers reject too ("duplicate of line N"), so
    `leukowatch read` and the screen count them alike; a same-draw result with a different value is
    rejected here but kept by the readers (assess warns, uses the later)."""
    r = superseded
    return r.select(_row=r._row, source=r._src, patient_id=r.patient_id, time=r.time,
                    analyte=r.analyte, loinc=ibis.null("string"), value=r.value.cast("string"),
                    unit=ibis.null("string"),
                    reason=ibis.literal("superseded by a later result for the same analyte in the same draw"),
                    reason_code=ibis.literal("duplicate"))


def derivable_from(present: frozenset[int]) -> tuple[str, ...]:
    """The counts `_derived_counts` can make from the slots the input uses: the ANC from segments or a
    neutrophil or segment percentage, every other count from its own percentage. A count nothing can be
    derived from gets no item (an item per draw costs the unnest its time, and it would only be NULL)."""
    def has(a: str, percent: bool) -> bool:
        return rel.slot_bit(a, percent) in present

    neutrophil_inputs = has("neutrophils", True) or has("segmented_neutrophils", True) or has(
        "segmented_neutrophils", False)
    return tuple(a for a in rel.DERIVABLE if (neutrophil_inputs if a == "neutrophils" else has(a, True)))


def _derived_counts(d: ir.Table, bounds: bool, present: frozenset[int]) -> ir.Table:
    """rules.differential.derive_draw: ANC from segments (+ bands), from neutrophils % (+ bands %) or
    segments % (+ bands %), other counts as WBC x % / 100; with `bounds`, each derived count's direction
    (rules.differential._joint_comparator over the counts it is made of)."""
    def measured(a: str) -> ir.BooleanValue:
        return (d.mask & rel.slot_bit(a, False)) != 0

    def joint(*columns: str) -> ir.StringValue:
        return joint_comparator(*[d[c] for c in columns]) if bounds else ibis.null("string")

    def from_wbc(pct_bound: str) -> ir.StringValue:
        """WBC x one percentage: a percentage given as a plain number passes the WBC's own comparator on,
        '<=' included; otherwise the joint direction."""
        if not bounds:
            return ibis.null("string")
        return ibis.cases((d[pct_bound] == 0, comparator_of(d.b_wbc)), else_=joint("b_wbc", pct_bound))

    d = d.filter(d.derives)
    zero = ibis.literal(0.0)
    items = []
    for a in derivable_from(present):
        if a == "neutrophils":
            neut_pct = d.pct_neutrophils + d.pct_bands.fill_null(zero)
            segs_pct = d.pct_segmented_neutrophils + d.pct_bands.fill_null(zero)
            value = ibis.cases(
                (measured("neutrophils"), ibis.null("float64")),
                (d.abs_segs.notnull(), d.abs_segs + d.abs_bands.fill_null(zero)),
                (d.pct_neutrophils.notnull(), d.wbc * neut_pct / PERCENT),
                (d.pct_segmented_neutrophils.notnull(), d.wbc * segs_pct / PERCENT),
                else_=ibis.null("float64"))
            percent = ibis.cases(
                (d.abs_segs.notnull(), ibis.null("float64")),
                (d.pct_neutrophils.notnull(), neut_pct),
                else_=segs_pct)
            comparator = ibis.cases(
                (d.abs_segs.notnull(), joint("b_segs", "b_bands")),
                (d.pct_neutrophils.notnull() & d.pct_bands.notnull(), joint("b_wbc", "bp_neutrophils", "bp_bands")),
                (d.pct_neutrophils.notnull(), from_wbc("bp_neutrophils")),
                else_=joint("b_wbc", "bp_segmented_neutrophils", "bp_bands"))
        else:
            value = ibis.cases((measured(a), ibis.null("float64")), else_=d.wbc * d[f"pct_{a}"] / PERCENT)
            percent = d[f"pct_{a}"]
            comparator = from_wbc(f"bp_{a}")
        items.append(ibis.struct({"analyte": ibis.literal(a), "value": value.cast("float64"),
                                  "percent": percent.cast("float64"), "comparator": comparator.cast("string")}))
    if not items:  # no percentage and no segments in the input: nothing to derive
        items.append(ibis.struct({"analyte": ibis.null("string"), "value": ibis.null("float64"),
                                  "percent": ibis.null("float64"), "comparator": ibis.null("string")}))
        d = d.filter(ibis.literal(False))
    # One pass: every draw's derivable counts as an array, unnested (a union of one query per analyte
    # would aggregate the draws once per analyte).
    u = d.select("patient_id", "time", item=ibis.array(items).unnest())
    u = u.filter(u.item.value.notnull())
    return u.select(patient_id=u.patient_id, time=u.time, analyte=u.item.analyte, value=u.item.value,
                    derived=ibis.literal(True), comparator=u.item.comparator, lab_low=ibis.null("float64"),
                    lab_high=ibis.null("float64"), percent_value=u.item.percent)


def counts_of(obs: ir.Table, draws: ir.Table, present: frozenset[int], bounds: bool = False) -> ir.Table:
    """Absolute counts of every draw: measured ones (not segments, not a WBC unit slip) and those derived
    from the differential. `obs` holds no superseded row (see `without`)."""
    measured = obs.filter(~obs.percent & (obs.analyte != "segmented_neutrophils") & ~obs.slip)
    measured = measured.select(patient_id=measured.patient_id, time=measured.time, analyte=measured.analyte,
                               value=measured.value, derived=ibis.literal(False), comparator=measured.comparator,
                               lab_low=measured.lab_low, lab_high=measured.lab_high,
                               percent_value=ibis.null("float64"))
    # a materialised relation may type `time` with its precision (timestamp(6)); the union needs one type
    return measured.union(_derived_counts(draws, bounds, present).cast(measured.schema()))


#: Ages whose decade label is a constant in `age_band_of` (any other age has its label built).
_LABELLED_AGES_TO = 130


def age_band_of(age: ir.FloatingValue) -> ir.StringValue:
    """The summary's decade ("40-49"), or "unknown". Usual ages get their label as a constant: building
    the text for every row cost four times as much (0.26 against 0.07 CPU s per 3M rows)."""
    decade = (age // AGE_BAND_YEARS).floor().cast("int64") * AGE_BAND_YEARS
    built = decade.cast("string") + "-" + (decade + AGE_BAND_YEARS - 1).cast("string")
    labelled = [((age >= d) & (age < d + AGE_BAND_YEARS), f"{d}-{d + AGE_BAND_YEARS - 1}")
                for d in range(0, _LABELLED_AGES_TO, AGE_BAND_YEARS)]
    return ibis.cases((age.isnull(), "unknown"), *labelled, else_=built)


#: A result's flag against its range.
FLAGS: tuple[str, ...] = ("low", "normal", "high")


def graded_categories() -> dict[str, tuple[str, ...]]:
    """Every value each string column of `grade` can hold, for engines that encode such columns compactly."""
    return {"analyte": ANALYTES, "flag": FLAGS, "finding": FINDING_CODES}


def findings_categories(criteria: str) -> dict[str, tuple[str, ...]]:
    """The same for `findings_of` (its age band is open-ended text, so not listed)."""
    return {"finding": FINDING_CODES, "analyte": ANALYTES, "sex": get_args(Sex), "profile": tuple(profile_names()),
            "term": rel.term_values(criteria), "severity": rel.severity_values()}


def person_terms(c: ir.Table, requested_profile: str | None) -> ir.Table:
    """`age` at each result (model.Patient.age_at: days from the birth date / 365.25, else the stated age)
    and the reference `profile` (the requested one, or duffy_null for Duffy-null persons), from the
    person's columns joined onto a relation with `time`."""
    days = c.time.date().delta(c.birth_date, unit="day")
    age = ibis.cases((c.birth_date.notnull(), days / DAYS_PER_YEAR), else_=c.age_years)
    return c.mutate(age=age, profile=profile_of(c.duffy_null, requested_profile))


def profile_of(duffy_null: ir.BooleanValue, requested_profile: str | None) -> ir.StringValue:
    """rules.ranges.profile_for: the requested profile for everybody, else duffy_null for Duffy-null persons."""
    if requested_profile:
        return ibis.literal(profile_for(requested_profile, False))
    return ibis.cases((duffy_null, profile_for(None, True)), else_=profile_for(None, False))


def grade(counts: ir.Table, patients: ir.Table, requested_profile: str | None, criteria: str) -> ir.Table:
    """Ranges (lab first, per side, then the profile row for this sex and age), flag, finding, grade.

    One row per result, kept narrow (it is the one output as long as the input, and writing it is
    most of a screen's cost): the range's profile, sex, age band and sources are in `ranges` (by
    `range_id`), the unit is the analyte's canonical unit (model.CANONICAL_UNIT), the criteria
    version is in the summary, and the term and severity word are in `findings`.
    """
    c = person_terms(counts.join(patients, "patient_id"), requested_profile)
    c = c.mutate(band=rel.age_band(c.age), value=directed(c.value, c.comparator))
    r = rel.ranges_relation().select("range_id", "profile", "analyte", "sex", "band", "prof_low", "prof_high")
    c = c.left_join(r, ["profile", "analyte", "sex", "band"])
    low = c.lab_low.fill_null(c.prof_low)
    high = c.lab_high.fill_null(c.prof_high)
    lo, normal, hi = FLAGS
    flag = ibis.cases((low.notnull() & (c.value < low), lo), (high.notnull() & (c.value > high), hi), else_=normal)
    c = c.mutate(low=low, high=high, flag=flag)
    age = rel.age_terms(criteria, c.time, c.birth_date, c.age_years)  # None unless age-banded (DAIDS)
    # None unless the version grades counts within the range (DAIDS): then a normal count may be a finding
    within = rel.within_range_code(criteria, c.analyte, c.value, c.low, c.high, age)
    c = c.mutate(finding=rel.finding_code(c.analyte, c.flag, c.value, within))
    c = c.mutate(grade=rel.grade_expr(criteria, c.analyte, c.finding, c.value, c.low, c.high, age))
    return c.select(
        patient_id=c.patient_id, time=c.time, analyte=c.analyte, value=c.value, derived=c.derived,
        percent=c.percent_value, comparator=c.comparator, flag=c.flag, low=c.low, high=c.high,
        range_id=c.range_id, finding=c.finding, grade=c.grade)


def with_person(graded: ir.Table, patients: ir.Table, requested_profile: str | None) -> ir.Table:
    """Graded rows (a subset: the findings, the series with a low) with the person's sex, age and profile,
    which the narrow `graded` output leaves to `persons`; the same expressions `grade` used."""
    p = patients.select("patient_id", "sex", "birth_date", "age_years", "duffy_null")
    c = person_terms(graded.join(p, "patient_id"), requested_profile)
    return c.drop("birth_date", "age_years", "duffy_null")


# ---------------------------------------------------------------------------------------------
# 3. findings per draw (with pancytopenia), episodes, chronic cases


#: The counts low together in one draw that make pancytopenia (rules.findings).
PANCYTOPENIA_ANALYTES: tuple[str, ...] = ("wbc", "hemoglobin", "platelets")


def findings_of(graded: ir.Table, patients: ir.Table, requested_profile: str | None, criteria: str,
                present: frozenset[int] | None = None) -> ir.Table:
    """Finding rows with their CTCAE term and severity word, plus pancytopenia where WBC, hemoglobin and
    platelets are low in one draw (looked for only when the input's slots, `present`, hold all three:
    none of them is ever derived)."""
    f = with_person(graded.filter(graded.finding.notnull()), patients, requested_profile)
    age = None
    if rel.age_banded(criteria):  # the term depends on the age band (DAIDS lymphocytes only over 5 years)
        f = f.join(patients.select("patient_id", "birth_date", "age_years"), "patient_id")
        age = rel.age_terms(criteria, f.time, f.birth_date, f.age_years)
    f = f.select(patient_id=f.patient_id, time=f.time, finding=f.finding, analyte=f.analyte, value=f.value,
                 grade=f.grade, term=rel.term_expr(criteria, f.finding, age),
                 severity=rel.severity_expr(f.finding, f.grade, f.value, f.low), profile=f.profile, sex=f.sex,
                 age_band=age_band_of(f.age))
    if present is not None and not all(rel.slot_bit(a, False) in present for a in PANCYTOPENIA_ANALYTES):
        return f
    # a draw is pancytopenic when its low results include all three analytes, so only low results of
    # those analytes are grouped (profile, sex and age are the person's, the same on every row)
    g = graded.filter((graded.flag == "low") & graded.analyte.isin(list(PANCYTOPENIA_ANALYTES)))
    g = with_person(g, patients, requested_profile)

    def low(a: str) -> ir.BooleanValue:
        return (g.analyte == a).any()

    d = g.group_by(["patient_id", "time"]).agg(
        all_low=ibis.and_(*[low(a) for a in PANCYTOPENIA_ANALYTES]),
        value=g.value.max(where=g.analyte == "wbc"), profile=g.profile.max(), sex=g.sex.max(), age=g.age.max())
    d = d.filter(d.all_low)
    pan = d.select(patient_id=d.patient_id, time=d.time, finding=ibis.literal("pancytopenia"),
                   analyte=ibis.literal("wbc"), value=d.value, grade=ibis.null("int64"), term=ibis.null("string"),
                   severity=ibis.null("string"), profile=d.profile, sex=d.sex, age_band=age_band_of(d.age))
    return f.union(pan)


def episodes_of(graded: ir.Table, patients: ir.Table, requested_profile: str | None) -> ir.Table:
    """rules.timeline.episodes as gaps and islands: an island is a run of lows between non-low results.

    One window pass numbers the islands (a running count of non-low results) and looks one result
    ahead: the result after an island's last low is its recovery, so no join back is needed. The
    nadir is the smallest (value, time), i.e. the earliest of equal lowest values, as the rule picks.
    """
    p = graded.filter(graded.analyte.isin(list(LOW_FINDING)))
    p = p.select("patient_id", "analyte", "time", "value", "flag", "grade")
    # only series with a low result can hold an island: the window then sorts just those
    with_low = p.filter(p.flag == "low").select("patient_id", "analyte").distinct()
    p = p.semi_join(with_low, ["patient_id", "analyte"])
    low = p.flag == "low"
    by = dict(group_by=[p.patient_id, p.analyte], order_by=p.time)
    p = p.mutate(is_low=low, grp=(~low).cast("int64").sum().over(ibis.cumulative_window(**by)),
                 next_time=p.time.lead().over(ibis.window(**by)), next_low=low.lead().over(ibis.window(**by)))
    lows = p.filter(p.is_low)
    nadir = ibis.struct({"value": lows.value, "time": lows.time}).min()
    e = lows.group_by(["patient_id", "analyte", "grp"]).agg(
        onset=lows.time.min(), last_low=lows.time.max(), n_low=lows.count(), worst_grade=lows.grade.max(),
        nadir=nadir, recovery=lows.next_time.max(where=~lows.next_low))
    # the person's sex, profile and age at onset, joined onto the (few) episodes rather than their rows
    e = with_person(e.mutate(time=e.onset), patients, requested_profile)
    finding = ibis.cases(*[(e.analyte == a, code) for a, code in LOW_FINDING.items()], else_=ibis.null("string"))
    return e.select(
        patient_id=e.patient_id, finding=finding, analyte=e.analyte, onset=e.onset, last_low=e.last_low,
        nadir_value=e.nadir["value"], nadir_time=e.nadir["time"], worst_grade=e.worst_grade, n_low=e.n_low,
        recovery=e.recovery, duration_days=days_between(e.onset, e.recovery.fill_null(e.last_low)),
        ongoing=e.recovery.isnull(), sex=e.sex, profile=e.profile, age_band=age_band_of(e.age))


def chronic_of(graded: ir.Table, patients: ir.Table, requested_profile: str | None) -> ir.Table:
    """rules.timeline.chronic_evidence per person and analyte.

    The earliest qualifying window always starts at the first low and ends at the last (the span and
    the count both only grow as the window widens), so the rule is: at least `min_low_results` lows
    whose first and last are at least `min_span_days` apart; the evidence is every low result.
    """
    rule = chronic_rule()
    p = graded.filter(graded.analyte.isin(list(LOW_FINDING)) & (graded.flag == "low"))
    a = p.group_by(["patient_id", "analyte"]).agg(
        n_low=p.count(), first_low=p.time.min(), last_low=p.time.max(), nadir_value=p.value.min(),
        worst_grade=p.grade.max(), evidence=ibis.struct({"time": p.time, "value": p.value}).collect().sort())
    a = a.mutate(span_days=days_between(a.first_low, a.last_low))
    a = a.filter((a.n_low >= int(rule["min_low_results"])) & (a.span_days >= int(rule["min_span_days"])))
    person = patients.select("patient_id", "sex", "duffy_null")
    a = a.join(person, "patient_id")
    a = a.mutate(profile=profile_of(a.duffy_null, requested_profile)).drop("duffy_null")
    finding = ibis.cases(*[(a.analyte == k, code) for k, code in LOW_FINDING.items()], else_=ibis.null("string"))
    return a.mutate(finding=finding, rule=ibis.literal(
        f"low on >= {rule['min_low_results']} occasions spanning >= {rule['min_span_days']} days ({rule['source']})"))


def drug_episodes_of(episodes: ir.Table, medications: ir.Table, drugs: ir.Table) -> ir.Table:
    """Episodes with a listed medicine started within timeline.toml's association window before onset."""
    window = int(load_table("timeline")["drug_timing"]["association_window_days"])
    m = medications.join(drugs, "name")
    m = m.select(m_pid=m.patient_id, medication=m.name, generic=m.generic, drug_class=m.drug_class,
                 chemotherapy=m.chemotherapy, start=m.start, stop=m.stop)
    j = episodes.join(m, [episodes.patient_id == m.m_pid, m.start.notnull()])
    days = j.onset.date().delta(j.start, unit="day")
    j = j.mutate(days_from_start=days)
    j = j.filter((j.days_from_start >= 0) & (j.days_from_start <= window))
    return j.drop("m_pid")


# ---------------------------------------------------------------------------------------------
# 4. per-person flags


#: The booleans of `flags`, in their column order; the first three are findings codes.
FLAGS_OF_FINDINGS: tuple[str, ...] = ("neutropenia", "lymphocytopenia", "pancytopenia")
FLAG_COLUMNS: tuple[str, ...] = ("neutropenia", "lymphocytopenia", "chronic_neutropenia", "cyclic", "drug_associated",
                                 "febrile_neutropenia", "pancytopenia")


def flags_of(patients: ir.Table, findings: ir.Table, chronic: ir.Table, drug_episodes: ir.Table,
             cyclic: ir.Table | None, febrile: ir.Table | None) -> ir.Table:
    """One row per person with the booleans the demo validator compares with truth.

    Each source names the persons it flags as (patient_id, flag) rows, and one aggregation per person over
    their union sets every flag: a join per flag cost Spark a shuffle and a job each (7 jobs, 1 here).
    """
    f = findings.filter(findings.finding.isin(list(FLAGS_OF_FINDINGS)))
    c = chronic.filter(chronic.analyte == "neutrophils")
    d = drug_episodes.filter((drug_episodes.finding == "neutropenia") & ~drug_episodes.chemotherapy)
    sources: list[tuple[str, ir.Table | None]] = [("chronic_neutropenia", c), ("drug_associated", d),
                                                  ("cyclic", cyclic), ("febrile_neutropenia", febrile)]
    raised = [f.select("patient_id", flag=f.finding.cast("string"))]
    raised += [t.select("patient_id", flag=ibis.literal(name, "string")) for name, t in sources if t is not None]
    absent = {name for name, t in sources if t is None}  # no such source: False for everybody, as a constant
    u = ibis.union(*raised)
    per = u.group_by("patient_id").agg(**{f"_{n}": (u.flag == n).any() for n in FLAG_COLUMNS if n not in absent})
    out = patients.select("patient_id", "sex").left_join(per, "patient_id")
    return out.select("patient_id", "sex", **{n: ibis.literal(False) if n in absent else out[f"_{n}"].fill_null(False)
                                              for n in FLAG_COLUMNS})
