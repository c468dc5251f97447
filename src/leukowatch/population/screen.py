"""`screen(inputs, outdir)`: run the population rules on DuckDB or Spark and write the outputs.

Persons are screened in buckets (a hash of patient_id) sized so that one bucket's working set fits
the memory limit (usually one bucket: DuckDB spills what does not fit); every rule is per person, so
buckets never meet. Each bucket validates its rows straight from the input, aggregates its draws and
persons (the only materialised steps), writes `graded` in one streaming query and reads it back for
its findings, episodes and chronic cases; the small outputs (drug episodes, cyclic, febrile, flags,
summary) are computed over all parts. Spark runs the very same Ibis expressions in one bucket. Only
small relations (distinct codes, the summary, cyclic candidates) come back into Python.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ibis.expr.types as ir

from ..knowledge import Knowledge, knowledge_version, load_table, use
from ..model import InputError
from ..rules.grading import check_criteria, default_criteria
from ..rules.ranges import check_profile
from ..rules.timeline import Point, could_be_cyclic, cyclic_neutropenia
from . import pipeline as pl
from . import relations as rel
from .engines import Engine, Write, make_engine
from .inline import inline_table
from .sources import empty_medications, open_sources

#: Output tables, in the order they are written.
OUTPUTS: tuple[str, ...] = ("rejects", "graded", "persons", "ranges", "findings", "episodes", "chronic", "drug_episodes",
                            "cyclic", "febrile", "flags")


@dataclass
class ScreenResult:
    """Where the outputs are, the reconciliation and the summary; tables load on demand (pyarrow)."""

    outdir: Path
    engine: str
    paths: dict[str, Path]
    reconciliation: dict[str, int]
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def table(self, name: str) -> Any:
        """One output as a pyarrow Table (Spark writes directories; both read the same way)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.paths[name])

    def frame(self, name: str) -> Any:
        return self.table(name).to_pandas()

    @property
    def reconciliation_line(self) -> str:
        r = self.reconciliation
        return (f"read {r['read']:,} = graded {r['accepted']:,} + rejected {r['rejected']:,} "
                f"({r['duplicates']:,} superseded duplicates); {r['graded']:,} graded results "
                f"({r['derived']:,} derived from the differential)")

    @property
    def reconciles(self) -> bool:
        r = self.reconciliation
        return r["read"] == r["accepted"] + r["rejected"]


class _Progress:
    """A rich progress display on a terminal (or when asked); silent otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._task: Any = None
        self.total = total

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("screening", total=self.total)
        return self

    def step(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def grow(self, steps: int) -> None:
        """Add steps once their number is known (the buckets of persons)."""
        self.total += steps
        if self._progress is not None:
            self._progress.update(self._task, total=self.total)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _cyclic(engine: Engine, episodes: ir.Table, graded: ir.Table) -> ir.Table:
    """rules.timeline.cyclic_neutropenia on the persons with enough neutropenia nadirs to qualify.

    The periodogram is not relational, so the relational part only finds candidates (>= min_cycles
    neutropenia episodes) and the per-patient rule judges each candidate's ANC series.
    """
    need = int(load_table("timeline")["cyclic"]["min_cycles"])
    e = episodes.filter(episodes.finding == "neutropenia")
    cand = e.group_by("patient_id").agg(n=e.count())
    cand = cand.filter(cand.n >= need).select(c_pid="patient_id")
    g = graded.filter(graded.analyte == "neutrophils")
    series = g.join(cand, g.patient_id == cand.c_pid).select("patient_id", "time", "value", "flag", "grade")
    # the rule judges only a window of at least `min_points` results (sparser series are insufficient data),
    # so a shorter series is settled here instead of being fetched and judged in Python
    counted = series.group_by("patient_id").agg(n=series.count())
    long_enough = counted.filter(counted.n >= int(load_table("timeline")["cyclic_method"]["min_points"]))
    series = series.semi_join(long_enough, "patient_id")
    # plain rows and itertools.groupby: slicing a DataFrame per person cost more than the rule itself
    rows: list[dict[str, Any]] = []
    for pid, part in itertools.groupby(engine.records(series.order_by(["patient_id", "time"])),
                                       key=lambda r: r["patient_id"]):
        points = [Point(r["time"], float(r["value"]), r["flag"] == "low",
                        None if r["grade"] is None else int(r["grade"])) for r in part]
        if not could_be_cyclic(points):  # the same nadir tests, before the costly periodogram
            continue
        verdict = cyclic_neutropenia(points)
        if verdict.status == "suspected":
            rows.append({"patient_id": str(pid), "period_days": verdict.period_days,
                         "n_nadirs": len(verdict.nadirs), "evidence": "; ".join(verdict.evidence)})
    schema = {"patient_id": "string", "period_days": "float64", "n_nadirs": "int64", "evidence": "string"}
    return inline_table(rows, schema)


def _febrile(graded: ir.Table, temperatures: ir.Table) -> ir.Table:
    """rules.infection.febrile_neutropenia with a temperature measured on the day of the ANC draw."""
    fn = load_table("infection")["febrile_neutropenia"]
    g = graded.filter((graded.analyte == "neutrophils") & (graded.value < fn["anc_below"]))
    t = temperatures.filter(temperatures.temperature_c >= fn["single_temp_c"])
    t = t.select(t_pid=t.patient_id, t_time=t.time, temperature_c=t.temperature_c)
    j = g.join(t, [g.patient_id == t.t_pid, g.time.date() == t.t_time.date()])
    return j.select(patient_id=j.patient_id, time=j.time, anc=j.value, temperature_time=j.t_time,
                    temperature_c=j.temperature_c)


def _count(engine: Engine, expr: ir.Table) -> int:
    return int(engine.scalar(expr.count()))


def _bucket_rows(engine: Engine, raw: ir.Table, buckets: int, read: int) -> dict[int, int]:
    """The input rows of each bucket: a bucket whose every row is accepted then needs no second validating
    scan to find its rejects (one grouped scan here instead of one such scan per bucket)."""
    if buckets == 1:
        return {0: read}
    b = raw.select(bucket=pl.bucket_of(raw.patient_id, buckets))
    return {int(r["bucket"]): int(r["n"]) for r in engine.records(b.group_by("bucket").agg(n=b.count()))}


@dataclass(frozen=True)
class _Plan:
    """What every bucket shares: the small relations built once from the distinct codes, sexes and ids."""

    codes: ir.Table
    sexes: ir.Table
    blank: list[str]
    present: frozenset[int]
    person: frozenset[str]  # the person columns rows carry (pipeline.persons_of)
    bounds: bool  # values are text: some may be bounds (below or above x), whose direction derived counts inherit
    persons: ir.Table | None  # PERSON / the store's patients table, when the source has one
    profile: str | None
    criteria: str


@contextmanager
def _step(steps: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of one step to `steps` (summed over the buckets): the per-step cost table."""
    t0 = time.perf_counter()
    yield
    steps[name] = round(steps.get(name, 0.0) + time.perf_counter() - t0, 3)


def _screen_bucket(eng: Engine, raw: ir.Table, plan: _Plan, k: int, buckets: int, out: Path,
                   work: Path, steps: dict[str, float], rows: int) -> dict[str, int]:
    """Validate, grade and find the episodes of one bucket of persons (every rule is per person, so buckets
    never meet); each output gets one part file. Returns the bucket's accepted and superseded rows.

    Nothing as long as the input is kept between steps: validating again from the input (a scan and two
    joins with relations of a few rows) costs less than writing the judged rows once and reading them
    back, and `graded` is written by one streaming query. Only the per-person and per-draw aggregates
    are materialised, and the findings, episodes and chronic cases read the narrow `graded` part back.
    """
    checked = pl.validate(raw, plan.codes, plan.sexes, plan.blank, eng.parse_in_steps)
    obs = pl.accepted_of(checked)
    rejects = pl.rejects_of(checked, plan.blank)
    with _step(steps, "validate, aggregate draws and persons"):
        d = pl.draws_of(obs, plan.present, plan.bounds)
        # two scans of the input that read nothing of each other (Spark runs them at once)
        kept = eng.materialize_all({"patients": pl.persons_of(obs, plan.person), "draws": d.aggregate}, work)
        found, draws = kept["patients"], d.complete(kept["draws"])
        patients = found
        if plan.persons is not None:
            p = plan.persons if buckets == 1 else plan.persons.filter(
                pl.bucket_of(plan.persons.patient_id, buckets) == k)
            known = found.select(k_pid="patient_id", k_age="age_years", k_n="n_results")
            patients = p.left_join(known, p.patient_id == known.k_pid).mutate(
                age_years=p.age_years.fill_null(known.k_age), n_results=known.k_n.fill_null(0)
            ).drop("k_pid", "k_age", "k_n")
            patients = eng.materialize(patients.union(found.anti_join(p, "patient_id")), "bucket_persons", work)
        persons = patients.mutate(profile=pl.profile_of(patients.duffy_null, plan.profile))
        # the accepted rows and the draws holding a duplicate, in one query (each is a job on Spark)
        sizes = eng.records(found.aggregate(n=found.n_results.sum()).cross_join(
            draws.aggregate(dups=draws.has_dup.cast("int64").sum())))[0]
        n_checked = int(sizes["n"] or 0)
    n_dups = 0
    with _step(steps, "duplicates (ranked only when a draw has one)"):
        if sizes["dups"]:
            # rare: rank the draws with duplicates, drop the earlier rows, aggregate the draws again
            superseded = eng.materialize(pl.superseded_of(obs, draws), "superseded", work)
            n_dups = _count(eng, superseded)
            obs = pl.without(obs, superseded)
            d = pl.draws_of(obs, plan.present, plan.bounds)
            draws = d.complete(eng.materialize(d.aggregate, "draws_clean", work))
            rejects = rejects.union(pl.superseded_rejects(superseded).cast(rejects.schema()))
    # every row of the bucket accepted: no rejects, and no second validating scan of the input to find none
    clean = rows == n_checked and not n_dups
    graded_path = eng.part_path(out, "graded", k)
    # the outputs of each batch read none of each other, so an engine may write them at once (Spark: their
    # seconds overlap); the longest first, as Spark gives the first job submitted the first free cores. Each
    # output's seconds go to its step (the persons to the step that found them).
    _write_all(eng, steps, {
        "graded (validate, derive, range, grade, write)": (
            pl.grade(pl.counts_of(obs, draws, plan.present, plan.bounds), patients, plan.profile, plan.criteria),
            graded_path, pl.graded_categories()),
        "validate, aggregate draws and persons": (persons, eng.part_path(out, "persons", k), None),
        "rejects": (rejects.limit(0) if clean else rejects, eng.part_path(out, "rejects", k), None)})
    graded = eng.read_parquet([graded_path])
    _write_all(eng, steps, {
        "episodes": (pl.episodes_of(graded, patients, plan.profile), eng.part_path(out, "episodes", k), None),
        "chronic": (pl.chronic_of(graded, patients, plan.profile), eng.part_path(out, "chronic", k), None),
        "findings": (pl.findings_of(graded, patients, plan.profile, plan.criteria, plan.present),
                     eng.part_path(out, "findings", k), pl.findings_categories(plan.criteria))})
    return {"checked": n_checked, "duplicates": n_dups}


def _write_all(eng: Engine, steps: dict[str, float], writes: dict[str, Write]) -> None:
    """`Engine.to_parquet_all`, each output's seconds added to the step it is named by."""
    for name, seconds in eng.to_parquet_all(writes).items():
        steps[name] = round(steps.get(name, 0.0) + seconds, 3)


def screen(inputs: list[str] | str, outdir: str | Path, engine: str = "duckdb", *,
           profile: str | None = None, criteria: str | None = None, memory_limit: str | None = None,
           spark_master: str | None = None, spark_session: Any = None, threads: int | None = None,
           progress: bool = False, keep_work: bool = False, knowledge: Knowledge | None = None) -> ScreenResult:
    """Screen every result in `inputs` and write the outputs (Parquet) to `outdir`.

    `profile` forces one reference profile for everybody (default: each person's own, i.e. Duffy-null
    persons get `duffy_null`); `criteria` picks the grading version (default CTCAE v5); `knowledge`
    the tables to judge with (default: the bundled ones plus the overlay LEUKOWATCH_KNOWLEDGE names).
    """
    if knowledge is not None:
        use(knowledge)
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    if profile:
        check_profile(profile)
    criteria = check_criteria(criteria or default_criteria())
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "_work").mkdir(exist_ok=True)
    except OSError as err:
        raise InputError("outdir", f"cannot write the outputs to {out}: {err.strerror or err}") from None
    work = out / "_work"
    eng = make_engine(engine, memory_limit=memory_limit, spark_master=spark_master,
                      spark_session_=spark_session, threads=threads)
    timings: dict[str, float] = {}
    steps: dict[str, float] = {}  # the bucket steps, summed over the buckets
    paths = {name: eng.output_path(out, name) for name in OUTPUTS}
    for path in paths.values():  # a previous screen's parts must not be read as this one's
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    @contextmanager
    def stage(name: str, bar: _Progress) -> Iterator[None]:
        bar.step(name)
        t0 = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - t0, 3)
        bar.advance()

    def write(expr: ir.Table, path: Path, categories: dict[str, tuple[str, ...]] | None = None) -> ir.Table:
        eng.to_parquet(expr, path, categories)
        return eng.read_parquet([path])

    try:
        with _Progress(progress, 5) as bar:
            with stage("reading inputs", bar):
                src = open_sources(eng, inputs, work)
                # one small query for every distinct spelling the rules are asked about (one job on Spark)
                keys = eng.records(pl.distinct_keys(src.raw))
                codes_rows = rel.code_rows(dict.fromkeys((k["analyte"], k["loinc"], k["unit"]) for k in keys))
                sexes_rows = rel.sex_rows(dict.fromkeys(k["sex"] for k in keys))
                person = {c for c in pl.PERSON_COLUMNS if any(k[f"has_{c}"] for k in keys)}
                if any(r["s_sex"] in pl.STATED_SEXES for r in sexes_rows):
                    person.add("sex")
                plan = _Plan(
                    codes=rel.codes_relation(codes_rows),
                    sexes=rel.sexes_relation(sexes_rows),
                    blank=sorted({k["blank_id"] for k in keys if k["blank_id"] is not None}),
                    present=frozenset(int(r["c_bit"]) for r in codes_rows if r["c_bit"] is not None),
                    person=frozenset(person),
                    bounds=src.raw.value.type().is_string(),
                    persons=src.patients, profile=profile, criteria=criteria)
                read = sum(int(k["n"]) for k in keys)
                buckets = eng.buckets(read)
                rows_in = _bucket_rows(eng, src.raw, buckets, read)
            counts = {"checked": 0, "duplicates": 0}
            with stage("grading results, findings, episodes, chronic cases", bar):
                bar.grow(buckets)
                for k in range(buckets):
                    bar.step(f"grading results, findings, episodes (persons bucket {k + 1} of {buckets})")
                    raw = src.raw if buckets == 1 else src.raw.filter(pl.bucket_of(src.raw.patient_id, buckets) == k)
                    for key, n in _screen_bucket(eng, raw, plan, k, buckets, out, work, steps, rows_in.get(k, 0)).items():
                        counts[key] += n
                    bar.advance()
                write(rel.ranges_relation(), paths["ranges"])
            graded, rejects, findings, episodes, chronic = (eng.read_parquet([paths[name]]) for name in (
                "graded", "rejects", "findings", "episodes", "chronic"))
            patients = eng.read_parquet([paths["persons"]])
            with stage("drug-associated episodes", bar):
                meds = src.medications if src.medications is not None else empty_medications()
                names = [r["name"] for r in eng.records(meds.select("name").distinct()) if r["name"] is not None]
                drug_eps = write(pl.drug_episodes_of(episodes, meds, rel.drugs_relation(names)),
                                 paths["drug_episodes"])
            with stage("cyclic and febrile neutropenia", bar):
                cyclic = write(_cyclic(eng, episodes, graded), paths["cyclic"])
                febrile = None
                if src.temperatures is not None:
                    febrile = write(_febrile(graded, src.temperatures), paths["febrile"])
                else:
                    paths.pop("febrile")
            with stage("per-person flags and summary", bar):
                flags = write(pl.flags_of(patients, findings, chronic, drug_eps, cyclic, febrile), paths["flags"])
                summary = build_summary(eng, graded, findings, episodes, chronic, drug_eps, flags, rejects)
                sizes = summary.pop("graded")
                n_graded, n_derived = (int(sizes[k] or 0) for k in ("n", "derived"))
                reconciliation = {"read": read, "accepted": counts["checked"] - counts["duplicates"],
                                  "rejected": sum(r["rows"] for r in summary["rejects_by_reason"]),
                                  "duplicates": counts["duplicates"], "graded": n_graded, "derived": n_derived}
                summary.update({
                    "engine": eng.name, "inputs": [str(i) for i in inputs], "source": src.kind,
                    "profile": profile or "per person (standard; duffy_null for Duffy-null persons)",
                    "criteria": rel.criteria_text(criteria), "knowledge_version": knowledge_version(),
                    "reconciliation": reconciliation, "timings_s": timings, "steps_s": steps, "buckets": buckets,
                })
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    finally:
        eng.close()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    result = ScreenResult(out, eng.name, paths, reconciliation, summary, timings)
    if not result.reconciles:
        raise InputError("reconciliation", result.reconciliation_line + " does not add up")
    return result


def build_summary(eng: Engine, graded: ir.Table, findings: ir.Table, episodes: ir.Table, chronic: ir.Table,
                  drug_eps: ir.Table, flags: ir.Table, rejects: ir.Table) -> dict[str, Any]:
    """Counts by finding, grade, sex and age band; drug-associated episodes by drug class; rejects by reason;
    and, under "graded", the rows of `graded` (n, derived) for the reconciliation. The queries run as one
    batch (`Engine.records_all`): small as they are, each costs Spark a plan and a job or two."""
    f = findings
    by_finding = f.group_by(["finding", "grade", "sex", "age_band"]).agg(
        results=f.count(), persons=f.patient_id.nunique()).order_by(["finding", "grade", "sex", "age_band"])
    d = drug_eps
    by_drug = d.group_by(["finding", "drug_class"]).agg(
        episodes=d.count(), persons=d.patient_id.nunique()).order_by(["finding", "drug_class"])
    r = rejects.group_by(["reason_code"]).agg(rows=rejects.count()).order_by("reason_code")
    fl = flags
    # an input with no accepted row has no persons: every count is 0, not NULL
    persons = fl.aggregate(**{c: fl[c].cast("int64").sum().fill_null(0) for c in fl.columns
                              if c not in ("patient_id", "sex")}, persons=fl.count())
    e = episodes.group_by("finding").agg(episodes=episodes.count(), ongoing=episodes.ongoing.cast("int64").sum())
    c = chronic.group_by("finding").agg(persons=chronic.count())

    sizes = graded.aggregate(n=graded.count(), derived=graded.derived.cast("int64").sum())
    queries = {"persons": persons, "by_finding": by_finding, "episodes": e, "chronic": c, "by_drug_class": by_drug,
               "rejects_by_reason": r, "graded": sizes}
    summary: dict[str, Any] = {
        name: [{k: (int(v) if hasattr(v, "is_integer") and float(v).is_integer() and k != "value" else v)
                for k, v in row.items()} for row in rows]
        for name, rows in zip(queries, eng.records_all(list(queries.values())), strict=True)}
    summary["persons"], summary["graded"] = summary["persons"][0], summary["graded"][0]
    return summary


def print_summary(result: ScreenResult, echo: Callable[[Any], None] | None = None) -> None:
    """The summary as rich tables on stdout, then the reconciliation line."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    show = echo or console.print
    s = result.summary
    t = Table(title="Findings by grade, sex and age band (results / persons)")
    for col in ("finding", "grade", "sex", "age band", "results", "persons"):
        t.add_column(col, justify="right" if col in ("grade", "results", "persons") else "left")
    for row in s["by_finding"]:
        t.add_row(str(row["finding"]), "" if row["grade"] is None else str(row["grade"]), str(row["sex"]),
                  str(row["age_band"]), f"{row['results']:,}", f"{row['persons']:,}")
    show(t)
    if s["by_drug_class"]:
        d = Table(title="Drug-associated episodes (listed medicine started <= 90 days before onset)")
        for col in ("finding", "drug class", "episodes", "persons"):
            d.add_column(col)
        for row in s["by_drug_class"]:
            d.add_row(str(row["finding"]), str(row["drug_class"]), f"{row['episodes']:,}", f"{row['persons']:,}")
        show(d)
    p = Table(title="Persons flagged")
    p.add_column("flag")
    p.add_column("persons", justify="right")
    for k, v in s["persons"].items():
        p.add_row(k, f"{v:,}")
    show(p)
    if s["rejects_by_reason"]:
        r = Table(title="Rejected rows by reason")
        r.add_column("reason")
        r.add_column("rows", justify="right")
        for row in s["rejects_by_reason"]:
            r.add_row(str(row["reason_code"]), f"{row['rows']:,}")
        show(r)
    show(result.reconciliation_line)
