"""Parity: the population engine (DuckDB and Spark) gives the per-patient engine's verdicts.

Hypothesis builds random small histories (sexes, children and adults, Duffy-null, lab ranges,
%-only differentials, segments + bands, neutrophils % + bands %, unit spellings, values on the grade
boundaries, values reported as bounds on those boundaries ('<0.5', '>1.0'), WBC unit slips); the
per-patient engine (request parsing, rules.counts, rules.findings, rules.timeline) judges each
person, the population engine judges them all at once, and grades, findings, episodes and chronic
verdicts must be identical.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leukowatch.assess import evaluate_history
from leukowatch.request import parse_request
from leukowatch.rules.findings import LOW_FINDING, findings_from_counts
from leukowatch.rules.grading import criteria_for_age
from leukowatch.rules.ranges import profile_for
from leukowatch.rules.timeline import LowResult, Point, chronic_evidence, episodes

CRITERIA = "ctcae-v5"
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
#: Values on and around the CTCAE and profile cut-offs (x10^9/L), so boundaries are exercised.
COUNTS = [0.05, 0.1, 0.2, 0.45, 0.5, 0.8, 0.99, 1.0, 1.21, 1.5, 1.7, 2.0, 2.9, 3.0, 3.5, 4.0, 5.0, 7.5, 9.0,
          10.0, 11.0, 12.5, 20.0, 30.0]
PERCENTS = [0.0, 1.0, 2.5, 5.0, 10.0, 20.0, 35.0, 50.0, 62.0]
COUNT_UNITS = [("10*9/L", 1.0), ("K/uL", 1.0), ("x10E3/uL", 1.0), ("/uL", 1000.0)]
#: Comparators a lab reports a bound with (HL7 SN, FHIR comparator, "<0.5" in a CSV).
BOUNDS = ["<", ">", "<=", ">="]


@st.composite
def draw_obs(draw: Any) -> list[dict[str, Any]]:
    obs: list[dict[str, Any]] = []

    def count(analyte: str) -> dict[str, Any]:
        unit, scale = draw(st.sampled_from(COUNT_UNITS))
        o: dict[str, Any] = {"analyte": analyte, "value": draw(st.sampled_from(COUNTS)) * scale, "unit": unit}
        if draw(st.integers(0, 5)) == 0:
            o["reference_range"] = {"low": draw(st.sampled_from([1.8, 2.0, 4.0])) * scale}
        if draw(st.integers(0, 4)) == 0:  # a bound on a cut-off: '<0.5' is just below 0.5, '>x' just above
            o["value"] = f"{draw(st.sampled_from(BOUNDS))}{o['value']:g}"
        return o

    if draw(st.booleans()):
        obs.append(count("wbc"))
    elif draw(st.integers(0, 5)) == 0:  # a WBC unit slip (2.1 cells/uL): kept, neither graded nor used
        obs.append({"analyte": "wbc", "value": 2.1, "unit": "/uL"})
    anc = draw(st.sampled_from(["abs", "pct", "pct_bands", "segs_pct", "segs_abs", "none"]))
    if anc == "abs":
        obs.append(count("neutrophils"))
    elif anc == "pct":
        obs.append({"analyte": "neutrophils", "value": draw(st.sampled_from(PERCENTS)), "unit": "%"})
    elif anc == "pct_bands":  # neutrophils % beside bands %: the ANC is WBC x (both) / 100
        obs.append({"analyte": "neutrophils", "value": draw(st.sampled_from(PERCENTS)), "unit": "%"})
        obs.append({"analyte": "bands", "value": draw(st.sampled_from(PERCENTS[:4])), "unit": "%"})
    elif anc == "segs_pct":
        obs.append({"analyte": "segs", "value": draw(st.sampled_from(PERCENTS)), "unit": "%"})
        if draw(st.booleans()):
            obs.append({"analyte": "bands", "value": draw(st.sampled_from(PERCENTS[:4])), "unit": "%"})
    elif anc == "segs_abs":
        obs.append(count("segmented_neutrophils"))
        if draw(st.booleans()):
            obs.append(count("bands"))
    lymph = draw(st.sampled_from(["abs", "pct", "none"]))
    if lymph == "abs":
        obs.append(count("lymphocytes"))
    elif lymph == "pct":
        obs.append({"analyte": "lymphocytes", "value": draw(st.sampled_from(PERCENTS)), "unit": "%"})
    if draw(st.booleans()):
        obs.append({"analyte": "basophils", "value": draw(st.sampled_from([0.0, 0.5, 1.0])), "unit": "%"})
    if draw(st.booleans()):
        obs.append({"analyte": "hemoglobin", "value": draw(st.sampled_from([7.5, 8.0, 9.9, 12.0, 13.0, 14.0])),
                    "unit": "g/dL"})
    if draw(st.booleans()):
        obs.append({"analyte": "platelets", "value": draw(st.sampled_from([20.0, 25.0, 60.0, 149.0, 150.0, 300.0])),
                    "unit": "10*9/L"})
    return obs or [count("wbc")]


@st.composite
def history(draw: Any) -> dict[str, Any]:
    days = sorted(draw(st.sets(st.integers(0, 400), min_size=1, max_size=7)))
    age_days = draw(st.sampled_from([10, 60, 200, 400, 1000, 2000, 4000, 7000, 15000, 30000]))
    patient: dict[str, Any] = {"sex": draw(st.sampled_from(["male", "female", "unknown"])),
                               "duffy_null": draw(st.integers(0, 4)) == 0}
    if draw(st.integers(0, 5)) > 0:
        patient["birth_date"] = (T0.date() - timedelta(days=age_days)).isoformat()
    observations = []
    superseded = 0
    for d in days:
        when = (T0 + timedelta(days=d, hours=draw(st.integers(0, 10)))).isoformat()
        obs = draw(draw_obs())
        if draw(st.integers(0, 3)) == 0:  # a corrected result later in the same draw: the later one is used
            again = dict(draw(st.sampled_from(obs)))
            again["value"] = _halved(again["value"])
            obs.append(again)
            superseded += 1
        for o in obs:
            observations.append({**o, "time": when})
    return {"patient": patient, "observations": observations, "superseded": superseded}


def _halved(value: float | str) -> float | str:
    """A corrected result: half the value (a bound keeps its comparator)."""
    if isinstance(value, str):
        sign = value.rstrip("0123456789.e+-")
        return f"{sign}{float(value[len(sign):]) / 2:g}"
    return value / 2


# ---------------------------------------------------------------------------------------------
# The per-patient side


def per_patient(pid: str, req: dict[str, Any], criteria: str = CRITERIA) -> dict[str, set[tuple[Any, ...]]]:
    request = parse_request(req)
    profile = profile_for(None, request.patient.duffy_null)
    draws = evaluate_history(request, profile)
    graded, findings = set(), set()
    series: dict[str, list[Point]] = {}
    for d in draws:
        # an age-banded version (DAIDS) grades each draw by the age at it, as assess does
        key = criteria_for_age(criteria, request.patient.birth_date, request.patient.age_years, d.time)
        found = findings_from_counts(d.counts, key)
        by_analyte = {f.analyte: f for f in found if f.code != "pancytopenia"}
        for f in found:
            findings.add((pid, _t(d.time), f.code, f.grade))
        for analyte, c in d.counts.items():
            f = by_analyte.get(analyte)
            graded.add((pid, _t(d.time), analyte, _v(c.value), c.flag, f.code if f else None, f.grade if f else None))
            if analyte in LOW_FINDING:
                low_grade = f.grade if (f is not None and c.flag == "low") else None
                series.setdefault(analyte, []).append(Point(d.time, c.value, c.flag == "low", low_grade))
    eps, chronic = set(), set()
    for analyte, points in series.items():
        for e in episodes(analyte, points):
            eps.add((pid, analyte, _t(e.onset), _t(e.last_low), _v(e.nadir_value), _t(e.nadir_time), e.worst_grade,
                     e.n_low, _t(e.recovery), e.duration_days))
        evidence = chronic_evidence([LowResult(p.time, p.value) for p in points if p.low])
        if evidence is not None:
            chronic.add((pid, analyte, len(evidence)))
    return {"graded": graded, "findings": findings, "episodes": eps, "chronic": chronic}


def _t(x: datetime | None) -> str | None:
    return None if x is None else x.astimezone(UTC).replace(tzinfo=None).isoformat()


def _v(x: float) -> float:
    return round(float(x), 9)


# ---------------------------------------------------------------------------------------------
# The population side


def write_population(histories: list[dict[str, Any]], path: Path) -> None:
    rows: dict[str, list[Any]] = {k: [] for k in ("patient_id", "time", "analyte", "value", "unit", "low", "high",
                                                  "sex", "birth_date", "duffy_null")}
    for i, h in enumerate(histories):
        p = h["patient"]
        for o in h["observations"]:
            rng = o.get("reference_range") or {}
            rows["patient_id"].append(f"P{i}")
            rows["time"].append(datetime.fromisoformat(o["time"]))
            rows["analyte"].append(o["analyte"])
            rows["value"].append(o["value"] if isinstance(o["value"], str) else float(o["value"]))
            rows["unit"].append(o["unit"])
            rows["low"].append(rng.get("low"))
            rows["high"].append(rng.get("high"))
            rows["sex"].append(p["sex"])
            rows["birth_date"].append(date.fromisoformat(p["birth_date"]) if "birth_date" in p else None)
            rows["duffy_null"].append(p["duffy_null"])
    if any(isinstance(v, str) for v in rows["value"]):  # bounds: the value column is text, as in a CSV
        rows["value"] = [v if isinstance(v, str) else repr(v) for v in rows["value"]]
    table = pa.table({**rows, "time": pa.array(rows["time"], pa.timestamp("us", tz="UTC")),
                      "low": pa.array(rows["low"], pa.float64()), "high": pa.array(rows["high"], pa.float64()),
                      "birth_date": pa.array(rows["birth_date"], pa.date32())})
    pq.write_table(table, path)


def population(result: Any) -> dict[str, set[tuple[Any, ...]]]:
    def rows(name: str) -> list[dict[str, Any]]:
        return result.table(name).to_pylist()

    def ts(x: Any) -> str | None:
        return None if x is None else x.replace(tzinfo=None).isoformat()

    def g(x: Any) -> int | None:
        return None if x is None else int(x)

    graded = {(r["patient_id"], ts(r["time"]), r["analyte"], _v(r["value"]), r["flag"], r["finding"], g(r["grade"]))
              for r in rows("graded")}
    findings = {(r["patient_id"], ts(r["time"]), r["finding"], g(r["grade"])) for r in rows("findings")}
    eps = {(r["patient_id"], r["analyte"], ts(r["onset"]), ts(r["last_low"]), _v(r["nadir_value"]), ts(r["nadir_time"]),
            g(r["worst_grade"]), r["n_low"], ts(r["recovery"]), r["duration_days"]) for r in rows("episodes")}
    chronic = {(r["patient_id"], r["analyte"], r["n_low"]) for r in rows("chronic")}
    return {"graded": graded, "findings": findings, "episodes": eps, "chronic": chronic}


def check_parity(histories: list[dict[str, Any]], tmp: Path, engine: str, criteria: str = CRITERIA,
                 **kw: Any) -> None:
    from leukowatch.population import screen

    expected: dict[str, set[tuple[Any, ...]]] = {"graded": set(), "findings": set(), "episodes": set(), "chronic": set()}
    for i, h in enumerate(histories):
        for k, v in per_patient(f"P{i}", {"patient": h["patient"], "observations": h["observations"]},
                                criteria).items():
            expected[k] |= v
    src = tmp / "obs.parquet"
    write_population(histories, src)
    result = screen([str(src)], tmp / f"out-{engine}", engine=engine, criteria=criteria, **kw)
    got = population(result)
    assert result.reconciles
    assert result.reconciliation["rejected"] == result.reconciliation["duplicates"] == sum(
        h["superseded"] for h in histories)
    for key in ("graded", "findings", "episodes", "chronic"):
        missing, extra = expected[key] - got[key], got[key] - expected[key]
        assert not missing and not extra, f"{key}: per-patient only {sorted(missing, key=str)[:5]}; " \
                                          f"population only {sorted(extra, key=str)[:5]}"


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@settings(max_examples=15, **_SETTINGS)
@given(histories=st.lists(history(), min_size=1, max_size=6))
def test_duckdb_matches_per_patient(histories: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> None:
    check_parity(histories, tmp_path_factory.mktemp("duck"), "duckdb")


@pytest.mark.parametrize("criteria", ["ctcae-v6", "daids-v2.1"])
@settings(max_examples=6, **_SETTINGS)
@given(histories=st.lists(history(), min_size=1, max_size=6))
def test_duckdb_matches_per_patient_with_other_criteria(criteria: str, histories: list[dict[str, Any]],
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """CTCAE v6 (WBC decreased added) and DAIDS v2.1 (bands by age in days per result, newborns included)."""
    check_parity(histories, tmp_path_factory.mktemp("criteria"), "duckdb", criteria)


@settings(max_examples=8, **_SETTINGS)
@given(histories=st.lists(history(), min_size=4, max_size=10))
def test_duckdb_buckets_match_per_patient(histories: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Large inputs are screened in buckets of persons (one per memory-limit's worth of rows): forced here."""
    from leukowatch.population.engines import DuckDBEngine

    monkeypatch.setattr(DuckDBEngine, "buckets", lambda self, rows: 3)
    check_parity(histories, tmp_path_factory.mktemp("buckets"), "duckdb")


@pytest.mark.spark
@pytest.mark.parametrize("criteria", ["ctcae-v5", "daids-v2.1"])
@settings(max_examples=1, **_SETTINGS)
@given(histories=st.lists(history(), min_size=15, max_size=25))
def test_spark_matches_per_patient(criteria: str, histories: list[dict[str, Any]], spark: Any,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Spark plans each stage slowly (seconds even for a few rows), so each example is a population."""
    check_parity(histories, tmp_path_factory.mktemp("spark"), "spark", criteria, spark_session=spark)


@pytest.fixture(scope="module")
def spark() -> Any:
    """One local[2] session for the module (UI off, loopback only, one shuffle partition)."""
    import shutil

    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no JDK")
    from leukowatch.population.engines import spark_session

    return spark_session("local[2]", shuffle_partitions=1)


@pytest.mark.spark
def test_spark_reads_a_csv_without_optional_columns(spark: Any, tmp_path: Path) -> None:
    """patient_id,time,analyte,value,unit only (no sex, birth date, ranges), bounds among the values: Spark
    grades it as DuckDB does."""
    from leukowatch.population import screen

    f = tmp_path / "observations.csv"
    f.write_text("patient_id,time,analyte,value,unit\nA1,2026-01-05T08:00:00Z,wbc,2.1,10*9/L\n"
                 "A1,2026-01-05T08:00:00Z,neutrophils,<0.5,10*9/L\nA1,2026-01-05T08:00:00Z,lymphocytes,20,%\n"
                 "A1,2026-03-05T08:00:00Z,neutrophils,0.9,10*9/L\n")
    graded = [{(r["analyte"], r["comparator"], r["flag"], r["grade"]) for r in
               screen([str(f)], tmp_path / engine, engine=engine, **kw).table("graded").to_pylist()}
              for engine, kw in (("duckdb", {}), ("spark", {"spark_session": spark}))]
    assert graded[0] == graded[1] and ("neutrophils", "<", "low", 4) in graded[0]
