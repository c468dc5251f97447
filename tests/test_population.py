"""`leukowatch screen` on DuckDB: inputs (tabular, OMOP, store), rejects, outputs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leukowatch.cli import main
from leukowatch.population import screen

CSV = """patient_id,sex,birth_date,time,analyte,loinc,value,unit,low,high
H1,male,1987-03-02,2026-01-05T09:00:00Z,neutrophils,,1.1,10*9/L,,
H1,male,1987-03-02,2026-01-05T09:00:00Z,wbc,,3.2,K/uL,,
H1,male,1987-03-02,2026-02-05T09:00:00Z,wbc,,2.2,K/uL,,
H1,male,1987-03-02,2026-02-05T09:00:00Z,,770-8,20,%,,
H1,male,1987-03-02,2026-05-05T09:00:00Z,wbc,,2.0,K/uL,,
H1,male,1987-03-02,2026-05-05T09:00:00Z,neutrophils,,0.4,10*9/L,,
H1,male,1987-03-02,2026-06-05T09:00:00Z,neutrophils,,2.4,10*9/L,,
H2,f,1990-01-01,2026-01-05,wbc,,1.9,10*9/L,,
H2,f,1990-01-01,2026-01-05,hgb,,9,g/dL,,
H2,f,1990-01-01,2026-01-05,plt,,100,10*9/L,,
H2,f,1990-01-01,2026-01-05,wbc,,-1,10*9/L,,
H3,male,1987-03-02,not a time,wbc,,3.2,K/uL,,
H3,male,1987-03-02,2026-01-05,wbc,,3.2,bananas,,
H3,male,1987-03-02,2026-01-05,wbc,,3.2,,,
H3,male,1987-03-02,2026-01-05,foo,,3.2,K/uL,,
H3,male,1987-03-02,2026-01-05,,99999-9,3.2,K/uL,,
H3,male,1987-03-02,2026-01-05,wbc,,2000,10*9/L,,
"""
MEDS = "patient_id,name,start,stop\nH1,Bactrim DS,2025-12-20,2026-01-20\nH1,paracetamol,2025-12-20,\n"


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tab")
    (d / "observations.csv").write_text(CSV)
    (d / "medications.csv").write_text(MEDS)
    return d


@pytest.fixture(scope="module")
def result(tabular: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return screen([str(tabular)], tmp_path_factory.mktemp("out"), memory_limit="500MB")


def test_reconciles_and_names_every_reject(result) -> None:  # type: ignore[no-untyped-def]
    r = result.reconciliation
    assert r["read"] == 17 and r["rejected"] == 7 and r["read"] == r["accepted"] + r["rejected"]
    reasons = dict(zip(result.frame("rejects")["_row"].astype(int) % (1 << 40), result.frame("rejects")["reason_code"],
                       strict=True))
    assert set(reasons.values()) == {"implausible", "bad_time", "unknown_unit", "missing_unit", "unknown_analyte",
                                     "unknown_code"}
    assert sum(v == "implausible" for v in reasons.values()) == 2  # negative count and WBC 2000 x10^9/L


def test_graded_derived_anc_and_grades(result) -> None:  # type: ignore[no-untyped-def]
    g = result.frame("graded").set_index(["patient_id", "analyte"]).sort_values("time")
    anc = g.loc[("H1", "neutrophils")]
    assert list(anc["derived"]) == [False, True, False, False]
    assert anc["value"].iloc[1] == pytest.approx(2.2 * 20 / 100)  # WBC x % / 100 at the same draw
    assert [None if x != x else int(x) for x in anc["grade"]] == [2, 4, 4, None]
    # graded is narrow: the unit is the analyte's canonical one, the criteria in the summary, the range's
    # profile and sex one join away in `ranges`
    assert "unit" not in g.columns and result.summary["criteria"] == "CTCAE v5.0"
    ranges = result.frame("ranges").set_index("range_id")
    wbc = g.loc[("H1", "wbc")]
    assert set(ranges.loc[wbc["range_id"].astype(int), "sex"]) == {"male"}


def test_episodes_chronic_drugs_and_flags(result) -> None:  # type: ignore[no-untyped-def]
    e = result.frame("episodes").set_index(["patient_id", "finding"])
    neut = e.loc[("H1", "neutropenia")]
    assert (neut["n_low"], neut["worst_grade"], neut["nadir_value"]) == (3, 4, 0.4)
    assert str(neut["recovery"]).startswith("2026-06-05")
    chronic = result.frame("chronic")
    assert set(zip(chronic["patient_id"], chronic["finding"], strict=True)) == {("H1", "neutropenia"),
                                                                                  ("H1", "leukopenia")}
    d = result.frame("drug_episodes")
    assert set(d["generic"]) == {"sulfamethoxazole/trimethoprim"} and set(d["days_from_start"]) == {16}
    flags = result.frame("flags").set_index("patient_id")
    assert flags.loc["H1", ["neutropenia", "chronic_neutropenia", "drug_associated"]].all()
    assert flags.loc["H2", "pancytopenia"] and not flags.loc["H2", "neutropenia"]
    assert "H3" not in flags.index  # every H3 row was rejected


def test_summary_json(result) -> None:  # type: ignore[no-untyped-def]
    s = json.loads((result.outdir / "summary.json").read_text())
    assert s["reconciliation"]["read"] == 17 and s["engine"] == "duckdb"
    rows = {(r["finding"], r["grade"]) for r in s["by_finding"]}
    assert ("neutropenia", 4) in rows and ("pancytopenia", None) in rows
    assert s["by_drug_class"][0]["drug_class"] == "sulfonamide"


def test_cli_screen(tabular: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", str(tabular), "-o", str(tmp_path / "o"), "--profile", "article", "-q"]) == 0
    out = capsys.readouterr().out
    assert "read 17 = graded 10 + rejected 7" in out and "neutropenia" in out
    assert main(["screen", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o")]) == 2
    assert main(["screen", str(tabular), "-o", str(tmp_path / "o"), "--profile", "nope"]) == 2


def test_cli_screen_names_an_unreadable_input_or_output_and_screens_an_empty_file(
        tabular: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Binary data given as a CSV, a damaged Parquet file and an output folder that cannot be made are errors
    naming the file or the option (exit 2, no traceback); a CSV with a header and no row screens to empty
    outputs whose counts are 0."""
    binary = tmp_path / "labs.csv"
    binary.write_bytes(bytes(range(256)) * 12)
    damaged = tmp_path / "observations.parquet"
    damaged.write_bytes(b"PAR1" + bytes(200))
    for path, kind in ((binary, "CSV"), (damaged, "Parquet")):
        assert main(["screen", str(path), "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: cannot be read as {kind}") and "Traceback" not in err, err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert main(["screen", str(tabular), "-o", str(blocked / "out")]) == 2
    assert "error: outdir: cannot write the outputs to" in capsys.readouterr().err
    empty = tmp_path / "empty" / "labs.csv"
    empty.parent.mkdir()
    empty.write_text("patient_id,time,analyte,value,unit\n")
    assert main(["screen", str(empty), "-o", str(tmp_path / "e")]) == 0
    assert "read 0 = graded 0 + rejected 0" in capsys.readouterr().out
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["persons"]["persons"] == 0 and s["persons"]["neutropenia"] == 0


def test_omop_duckdb_and_store(tmp_path: Path) -> None:
    omop = tmp_path / "omop.duckdb"
    with duckdb.connect(str(omop)) as c:
        c.execute("""CREATE TABLE measurement AS SELECT * FROM (VALUES
            (1, 10, 3013650, TIMESTAMP '2026-01-05 08:00', 800.0, 8647, NULL, NULL, '751-8', '/uL'),
            (2, 10, 3000905, TIMESTAMP '2026-01-05 08:00', 2.5, 9444, NULL, NULL, '6690-2', '10*9/L'),
            (3, 10, 1234567, TIMESTAMP '2026-01-05 08:00', 2.5, 9444, NULL, NULL, 'xyz', NULL))
            t(measurement_id, person_id, measurement_concept_id, measurement_datetime, value_as_number,
              unit_concept_id, range_low, range_high, measurement_source_value, unit_source_value)""")
        c.execute("CREATE TABLE person AS SELECT 10 AS person_id, 8532 AS gender_concept_id, 1970 AS year_of_birth")
        c.execute("""CREATE TABLE drug_exposure AS SELECT 10 AS person_id, 0 AS drug_concept_id,
                     'clozapine 100 mg' AS drug_source_value, DATE '2025-11-20' AS drug_exposure_start_date,
                     NULL::DATE AS drug_exposure_end_date""")
    r = screen([str(omop)], tmp_path / "o1")
    g = r.frame("graded").set_index("analyte")
    assert g.loc["neutrophils", "value"] == pytest.approx(0.8) and g.loc["neutrophils", "grade"] == 3
    assert r.frame("persons").set_index("patient_id").loc["10", "sex"] == "female"
    assert r.reconciliation["rejected"] == 1
    assert list(r.frame("drug_episodes")["generic"].unique()) == ["clozapine"]

    store = tmp_path / "store.duckdb"
    with duckdb.connect(str(store)) as c:
        c.execute("""CREATE TABLE observations AS SELECT 'S1' AS patient_id, TIMESTAMPTZ '2026-01-05 08:00:00+00' AS time,
                     'neutrophils' AS analyte, 0.3 AS value, '10^9/L' AS unit, false AS percent,
                     NULL::VARCHAR AS comparator, NULL::DOUBLE AS ref_low, NULL::DOUBLE AS ref_high""")
        c.execute("""CREATE TABLE patients AS SELECT 'S1' AS patient_id, 'male' AS sex, DATE '1950-01-01' AS birth_date,
                     NULL::DOUBLE AS age_years, false AS duffy_null""")
        c.execute("CREATE TABLE medications (patient_id VARCHAR, name VARCHAR, start DATE, stop DATE)")
    r = screen([str(store)], tmp_path / "o2")
    assert r.frame("graded")["grade"].tolist() == [4] and r.frame("flags")["neutropenia"].tolist() == [True]


def test_memory_limit_is_checked_and_sizes_the_buckets(tabular: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from leukowatch.population.engines import BUCKET_BYTES_PER_ROW, DuckDBEngine, parse_size

    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5 GiB") == int(1.5 * 2**30) and parse_size("512") == 512
    eng = DuckDBEngine("2GB")
    try:
        assert eng.memory_bytes < 2 * 10**9  # the limit caps the process: DuckDB gets less than all of it
        rows = eng.memory_bytes // BUCKET_BYTES_PER_ROW
        assert (eng.buckets(rows), eng.buckets(rows + 1), eng.buckets(10 * rows)) == (1, 2, 10)
    finally:
        eng.close()
    for bad, problem in (("lots", "is not a size"), ("100MB", "less than the screen itself needs")):
        assert main(["screen", str(tabular), "-o", str(tmp_path / "o"), "--memory-limit", bad]) == 2
        assert problem in capsys.readouterr().err


def test_outputs_are_folders_of_parts_and_a_rerun_replaces_them(tabular: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from leukowatch.population.engines import DuckDBEngine

    monkeypatch.setattr(DuckDBEngine, "buckets", lambda self, rows: 3)
    first = screen([str(tabular)], tmp_path / "o")
    assert len(list((tmp_path / "o" / "graded.parquet").glob("part-*.parquet"))) == 3
    monkeypatch.setattr(DuckDBEngine, "buckets", lambda self, rows: 1)
    again = screen([str(tabular)], tmp_path / "o")
    assert len(list((tmp_path / "o" / "graded.parquet").glob("part-*.parquet"))) == 1
    assert again.reconciliation == first.reconciliation and again.table("graded").num_rows == 10
    ranges = again.frame("ranges")
    assert set(again.frame("graded")["range_id"].dropna()) <= set(ranges["range_id"])
    assert ranges["low_source"].notna().any()


def test_csv_without_optional_columns(tmp_path: Path) -> None:
    """birth_date, sex, low, high, loinc are optional: a five-column CSV screens (as adults of unknown sex)."""
    f = tmp_path / "observations.csv"
    f.write_text("patient_id,time,analyte,value,unit\nA1,2026-01-05T08:00:00Z,wbc,2.1,10*9/L\n"
                 "A1,2026-01-05T08:00:00Z,neutrophils,0.4,10*9/L\nA1,2026-03-05T08:00:00Z,neutrophils,0.9,10*9/L\n")
    r = screen([str(f)], tmp_path / "o")
    g = r.frame("graded").sort_values(["time", "analyte"])
    assert g["grade"].tolist() == [4, 2, 3] and r.reconciliation["rejected"] == 0  # ANC 0.4, WBC 2.1, ANC 0.9
    assert r.frame("persons")["sex"].tolist() == ["unknown"]


def test_store_loaded_from_a_demo_set_screens_like_its_files(tmp_path: Path) -> None:
    """`leukowatch demo load` stores the temperatures too, so febrile neutropenia found by screening the
    store is what screening the demo files finds (and what `leukowatch demo validate` compares)."""
    from leukowatch.demo import generate
    from leukowatch.demo.commands import load_command
    from leukowatch.demo.export import write_demo

    demo = tmp_path / "demo"
    write_demo(generate(300, 5), demo, subset_size=0)
    store = tmp_path / "store.duckdb"
    assert load_command(str(demo), str(store)) == 0
    files = screen([str(demo / "observations.parquet"), str(demo / "temperatures.parquet"),
                    str(demo / "medications.parquet")], tmp_path / "from-files")
    stored = screen([str(store)], tmp_path / "from-store")

    def febrile(r) -> set[str]:  # type: ignore[no-untyped-def]
        fl = r.frame("flags")
        return set(fl.loc[fl["febrile_neutropenia"], "patient_id"])

    assert febrile(files) and febrile(stored) == febrile(files)


def test_absolute_counts_only_input_derives_nothing_and_needs_no_rejects_scan(tmp_path: Path) -> None:
    """No percentage, no segments, no hemoglobin: the screen leaves out the derivation, the pancytopenia
    lookup and the second validating scan (every row accepted), and its verdicts are those of the full path."""
    rows = ["patient_id,time,analyte,value,unit"]
    for day, (wbc, anc) in enumerate([(3.0, 1.2), (2.1, 0.4), (5.5, 3.1), (2.6, 0.9)], start=1):
        rows += [f"A1,2026-03-0{day}T08:00:00Z,wbc,{wbc},10*9/L", f"A1,2026-03-0{day}T08:00:00Z,neutrophils,{anc},10*9/L"]
    (tmp_path / "observations.csv").write_text("\n".join(rows) + "\n")
    r = screen([str(tmp_path / "observations.csv")], tmp_path / "out")
    assert r.reconciliation == {"read": 8, "accepted": 8, "rejected": 0, "duplicates": 0, "graded": 8, "derived": 0}
    assert r.table("rejects").num_rows == 0 and "reason_code" in r.table("rejects").column_names
    findings = r.frame("findings")
    assert "pancytopenia" not in set(findings["finding"])
    anc = findings[findings["finding"] == "neutropenia"].sort_values("time")
    assert anc["grade"].tolist() == [2, 4, 3]  # CTCAE v5: 1.2 (< 1.5, >= 1.0), 0.4 (< 0.5), 0.9 (< 1.0, >= 0.5)
    episodes = r.frame("episodes")
    anc_eps = episodes[episodes["finding"] == "neutropenia"].sort_values("onset")
    assert anc_eps["n_low"].tolist() == [2, 1] and anc_eps["ongoing"].tolist() == [False, True]


def test_inline_tables_keep_every_value_on_duckdb() -> None:
    """The knowledge relations reach DuckDB as they were made: NULLs (not 'NaN' or ''), infinities, quotes,
    dates; an empty relation keeps its columns; the same rows are one table, created once."""
    import datetime
    import math

    from leukowatch.population.engines import DuckDBEngine
    from leukowatch.population.inline import inline_table, tables_read_by

    schema = {"s": "string", "x": "float64", "n": "int64", "b": "boolean", "d": "date"}
    rows = [{"s": "it's", "x": math.inf, "n": 2**40, "b": True, "d": datetime.date(2020, 2, 29)},
            {"s": None, "x": None, "n": None, "b": None, "d": None},
            {"s": "", "x": -0.5}]
    t = inline_table(rows, schema)
    assert inline_table(rows, schema).get_name() == t.get_name()
    engine = DuckDBEngine()
    try:
        got = engine.records(t)
        by_s = {r["s"]: r for r in got}
        assert len(got) == len(by_s) == 3
        assert by_s["it's"] == {"s": "it's", "x": math.inf, "n": 2**40, "b": True, "d": datetime.date(2020, 2, 29)}
        assert by_s[None] == {"s": None, "x": None, "n": None, "b": None, "d": None}
        assert by_s[""]["x"] == -0.5 and by_s[""]["n"] is None
        empty = inline_table([], schema)
        assert engine.records(empty) == [] and engine.scalar(empty.count()) == 0
        joined = t.join(empty, "s")
        assert {x.name for x in tables_read_by(joined)} == {t.get_name(), empty.get_name()}
        assert engine.scalar(joined.count()) == 0
    finally:
        engine.close()


def test_duckdb_screen_never_imports_pandas_or_pyarrow(tabular: Path, tmp_path: Path) -> None:
    """pandas, pyarrow and numpy take 0.4 s to import, half of a small screen's fixed cost, and a DuckDB
    screen needs none of them: it brings back small results as plain rows, makes its knowledge relations
    from Python lists and reads table schemas as rows."""
    import subprocess
    import sys

    code = ("import sys; from leukowatch.population import screen; "
            f"screen([{str(tabular)!r}], {str(tmp_path / 'out')!r}); "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_blank_patient_ids_are_rejected_and_others_kept(tmp_path: Path) -> None:
    """Whitespace-only ids (and none at all) are "missing patient_id", as `leukowatch read` says; an id that
    merely starts with a space, or with a character just above it, is a patient."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [" ", "\t", "", None, " B1", "!B2", "B3"]
    pq.write_table(pa.table({"patient_id": ids, "time": ["2026-03-01T08:00:00Z"] * len(ids),
                             "analyte": ["wbc"] * len(ids), "value": [2.0] * len(ids),
                             "unit": ["10*9/L"] * len(ids)}), tmp_path / "observations.parquet")
    r = screen([str(tmp_path / "observations.parquet")], tmp_path / "out")
    rejects = r.table("rejects").to_pylist()
    assert sorted((x["patient_id"] or "", x["reason_code"]) for x in rejects) == [
        ("", "missing_patient"), ("", "missing_patient"), ("\t", "missing_patient"), (" ", "missing_patient")]
    assert sorted(r.table("graded").column("patient_id").to_pylist()) == [" B1", "!B2", "B3"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(min_value=-300, max_value=300, allow_nan=False)), max_size=40))
def test_age_band_labels_every_age_as_its_decade(ages: list[float | None]) -> None:
    """The summary's age band: constant labels for usual ages, built text for the rest, the same decade."""
    import math

    from leukowatch.population.engines import DuckDBEngine
    from leukowatch.population.inline import inline_table
    from leukowatch.population.pipeline import AGE_BAND_YEARS, age_band_of

    t = inline_table([{"i": i, "age": a} for i, a in enumerate(ages)], {"i": "int64", "age": "float64"})
    engine = DuckDBEngine()
    try:
        got = {r["i"]: r["band"] for r in engine.records(t.select("i", band=age_band_of(t.age)))}
    finally:
        engine.close()
    for i, age in enumerate(ages):
        decade = None if age is None else math.floor(age / AGE_BAND_YEARS) * AGE_BAND_YEARS
        assert got[i] == ("unknown" if decade is None else f"{decade}-{decade + AGE_BAND_YEARS - 1}"), age


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_text_values_and_ranges_are_read_as_request_parse_number_reads_them(tmp_path: Path, engine: str) -> None:
    """Text values: a decimal comma, a comparator with or without a space, padding; text reference ranges:
    an empty one is none, a non-number rejects its row (it crashed the screen), the number is used. DuckDB
    parses in column steps, Spark in one expression per number (Engine.parse_in_steps): the same answers."""
    if engine == "spark":
        import shutil

        pytest.importorskip("pyspark")
        if shutil.which("java") is None:
            pytest.skip("no JDK")
    import csv
    import math

    from leukowatch.model import InputError
    from leukowatch.request import parse_number

    values = ["1,5", " 2.5 ", "<1,2", ">= 3", "< 0.5", "1,234,5", "nan", "abc", "\t0.9\n", "1.0,5", "1,500",
              "< 150,000", "0,500", "12,3456"]
    lows = ["", " 3,5", "abc", "inf", "<4", "1,500"]
    path = tmp_path / "observations.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", "time", "analyte", "value", "unit", "low", "high"])
        for i, v in enumerate(values):
            w.writerow([f"V{i}", "2026-03-01T08:00:00Z", "wbc", v, "10*9/L", "", ""])
        for i, low in enumerate(lows):
            w.writerow([f"L{i}", "2026-03-01T08:00:00Z", "wbc", "2.0", "10*9/L", low, "11"])
    r = screen([str(path)], tmp_path / "out", engine=engine)
    graded = {g["patient_id"]: g for g in r.table("graded").to_pylist()}
    rejects = {x["patient_id"]: x["reason_code"] for x in r.table("rejects").to_pylist()}
    reasons = {x["patient_id"]: x["reason"] for x in r.table("rejects").to_pylist()}
    for i, v in enumerate(values):
        try:
            number, comparator = parse_number(v, "value")
        except InputError as e:
            assert rejects[f"V{i}"] == "bad_value", v
            assert ("ambiguous" in reasons[f"V{i}"]) == ("ambiguous" in e.problem), (v, reasons[f"V{i}"])
            continue
        g = graded[f"V{i}"]
        assert g["comparator"] == comparator and math.isclose(g["value"], number, rel_tol=1e-12), (v, g)
    for i, low in enumerate(lows):
        if low.strip() == "":
            assert graded[f"L{i}"]["low"] != 2.0 and f"L{i}" not in rejects
            continue
        try:
            number, _ = parse_number(low, "low")
        except InputError:
            assert rejects[f"L{i}"] == "bad_range", low
            continue
        assert graded[f"L{i}"]["low"] == number, low
    assert r.reconciles
