"""DAIDS v2.1 grades counts the reference range calls normal (criteria.toml `grades_within_range`).

DAIDS has no LLN: its cut-offs are absolute and age-banded, so a newborn's ANC of 4.5 is DAIDS grade 1
though the 0-1 month range starts at 1.0 (docs/clinical-reference.md §5, §12). The boundary cases are in
cases.toml; here: the knowledge key is validated, only DAIDS carries it, and the population screen
(DuckDB and Spark) gives each neonate's result the finding, grade, term and severity `assess` gives,
with the flag still the range's and the summary counting the same findings.
"""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leukowatch.assess import assess
from leukowatch.knowledge import KnowledgeError, load_knowledge, use
from leukowatch.population import relations as rel
from leukowatch.population.screen import screen
from leukowatch.rules.causes import match_medications
from leukowatch.rules.grading import criteria_versions, grades_within_range
from leukowatch.service.cds_cards import indicator, order_select_cards

RESULT = date(2026, 7, 20)
#: Ages in days at the result: each DAIDS ANC/WBC band (<= 1 day, 2-7 days, > 7 days), both sides of
#: its edges, and a 1-3 month infant (Iowa neutrophils from 1.0 again).
AGES_DAYS = (0, 1, 2, 4, 7, 8, 19, 40)
#: Values on both sides of every DAIDS ANC grade-1 upper end (5.0, 1.5, 1.0), the band edges below them
#: and counts above the grades.
VALUES = {"neutrophils": (0.79, 0.8, 1.0, 1.01, 1.25, 1.5, 1.51, 3.0, 4.0, 4.5, 5.0, 5.01, 8.0),
          "wbc": (2.4, 2.5, 5.5, 6.999, 7.0, 9.0, 12.0)}
#: A lab range that flags some of those counts high (never given a low finding) and one that starts low.
LAB_RANGES: tuple[tuple[float | None, float | None], ...] = ((None, None), (0.5, 4.0), (2.0, 30.0))


@pytest.fixture
def _bundled_after():  # noqa: ANN202 - a fixture
    """A test that loads an overlay leaves the bundled tables active."""
    yield
    use(load_knowledge())


def _overlay_error(tmp_path: Path, text: str) -> KnowledgeError:
    (tmp_path / "criteria.toml").write_text(text, encoding="utf-8")
    with pytest.raises(KnowledgeError) as info:
        load_knowledge(tmp_path)
    return info.value


@pytest.mark.usefixtures("_bundled_after")
@pytest.mark.parametrize(("text", "key_end", "problem"), [
    ('[versions."ctcae-v6"]\ngrades_within_range = 1\nsource = "site"\n', "versions.ctcae-v6.grades_within_range",
     "must be true or false, not 1"),
    ('[versions."daids-v2.1"]\ngrades_within_range = "false"\nsource = "site"\n', "versions.daids-v2.1.grades_within_range",
     "must be true or false, not 'false'"),
    ('[versions."ctcae-v5"]\ngrade_within_range = true\nsource = "site"\n', "versions.ctcae-v5.grade_within_range", "unknown key"),
])
def test_the_key_is_validated(tmp_path: Path, text: str, key_end: str, problem: str) -> None:
    """A quoted "false" or a 1 would read as true, a misspelt key as absent: both refused at load."""
    err = _overlay_error(tmp_path, text)
    assert err.file == str(tmp_path / "criteria.toml")
    assert err.key.endswith(key_end), err.key
    assert problem in err.problem, err.problem


def test_only_daids_grades_within_the_range() -> None:
    """CTCAE v5 grade 1 is "< LLN"; v6's LLN-free ANC rows would label Duffy-null persons' normal counts."""
    assert {v: grades_within_range(v) for v in criteria_versions()} == {
        "ctcae-v5": False, "ctcae-v6": False, "daids-v2.1": True}
    assert grades_within_range("daids-v2.1@1d0y:birth_date")  # a criteria key names its version


def test_only_daids_sql_has_the_branch() -> None:
    """The screen's SQL for CTCAE (the default) is as before: the within-range CASE exists only for DAIDS."""
    t = ibis.table({"analyte": "string", "value": "float64", "low": "float64", "high": "float64",
                    "time": "timestamp", "birth_date": "date", "age_years": "float64"}, name="t")
    for version in ("ctcae-v5", "ctcae-v6"):
        assert rel.within_range_code(version, t.analyte, t.value, t.low, t.high, None) is None
    age = rel.age_terms("daids-v2.1", t.time, t.birth_date, t.age_years)
    assert rel.within_range_code("daids-v2.1", t.analyte, t.value, t.low, t.high, age) is not None


def _rows() -> list[dict[str, Any]]:
    rows = []
    for age in AGES_DAYS:
        for analyte, values in VALUES.items():
            for value in values:
                for low, high in LAB_RANGES:
                    rows.append({"patient_id": f"p{len(rows)}", "time": f"{RESULT}T08:00:00Z", "analyte": analyte,
                                 "value": value, "unit": "10*9/L", "sex": "female", "low": low, "high": high,
                                 "birth_date": RESULT - timedelta(days=age)})
    return rows


def _write(rows: list[dict[str, Any]], path: Path) -> None:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    pq.write_table(pa.table({**cols, "low": pa.array(cols["low"], pa.float64()),
                             "high": pa.array(cols["high"], pa.float64()),
                             "birth_date": pa.array(cols["birth_date"], pa.date32())}), path)


def _assessed(row: dict[str, Any]) -> tuple[str, tuple[str, int | None, str | None, str | None] | None]:
    """(flag, (finding, grade, term, severity) or None) as `assess` gives them for one row."""
    obs: dict[str, Any] = {"analyte": row["analyte"], "value": row["value"], "unit": row["unit"], "time": row["time"]}
    if row["low"] is not None:
        obs["reference_range"] = {"low": row["low"], "high": row["high"]}
    a = assess({"patient": {"sex": row["sex"], "birth_date": row["birth_date"].isoformat()},
                "criteria": "daids-v2.1", "observations": [obs]})
    f = next(iter(a.findings), None)
    return a.counts[row["analyte"]].flag, None if f is None else (f.code, f.grade, f.term, f.severity)


def _screened(out: Any) -> tuple[dict[str, tuple[str, str | None, int | None]],
                                  dict[str, tuple[str, int | None, str | None, str | None]]]:
    def g(x: Any) -> int | None:
        return None if x is None else int(x)

    graded = {r["patient_id"]: (r["flag"], r["finding"], g(r["grade"])) for r in out.table("graded").to_pylist()}
    found = {r["patient_id"]: (r["finding"], g(r["grade"]), r["term"], r["severity"])
             for r in out.table("findings").to_pylist()}
    return graded, found


def _check(engine: str, tmp_path: Path, **kw: Any) -> None:
    rows = _rows()
    src = tmp_path / "neonates.parquet"
    _write(rows, src)
    out = screen([str(src)], tmp_path / engine, engine=engine, criteria="daids-v2.1", **kw)
    graded, found = _screened(out)
    expected = {r["patient_id"]: _assessed(r) for r in rows}
    for pid, (flag, finding) in expected.items():
        assert graded[pid] == (flag, *((finding[0], finding[1]) if finding else (None, None))), pid
        assert found.get(pid) == finding, pid
    within = [pid for pid, (flag, finding) in expected.items() if flag == "normal" and finding]
    assert len(within) >= 20  # the in-range grades this test is about are really among the rows
    day1_anc = {(r["value"], r["low"]): expected[r["patient_id"]] for r in rows
                if r["analyte"] == "neutrophils" and r["birth_date"] == RESULT - timedelta(days=1)}
    term = "Absolute Neutrophil Count (ANC), Low"
    assert day1_anc[4.5, None] == ("normal", ("neutropenia", 1, term, None))  # the profile's range, from 1.0
    assert day1_anc[4.5, 0.5] == ("high", ("neutrophilia", None, None, None))  # lab range to 4.0: never low
    assert day1_anc[0.79, None] == ("low", ("neutropenia", 4, term, "moderate"))
    by_summary = Counter({(s["finding"], s["grade"]): s["results"] for s in out.summary["by_finding"]})
    by_assess = Counter((f[0], f[1]) for _, f in expected.values() if f)
    assert +by_summary == +by_assess


@pytest.mark.parametrize("engine", ["duckdb"])
def test_duckdb_grades_neonates_within_range_as_assess(engine: str, tmp_path: Path) -> None:
    _check(engine, tmp_path)


@pytest.mark.spark
def test_spark_grades_neonates_within_range_as_assess(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no JDK")
    from leukowatch.population.engines import spark_session

    _check("spark", tmp_path, spark_session=spark_session("local[2]", shuffle_partitions=1))


def test_cds_cards_do_not_warn_of_a_daids_grade_within_the_range() -> None:
    # A newborn's ANC 4.5 on day 1 is DAIDS grade 1 but within the range: the patient-view card shows it
    # at "info" (no low count to warn of) and ordering a medicine linked to low white cells raises no
    # "ordered with neutropenia" warning; the same order with an ANC below the range does.
    def newborn(anc: float, when: str) -> dict:
        return {"patient": {"sex": "female", "birth_date": "2026-07-01"}, "criteria": "daids-v2.1",
                "observations": [{"analyte": "neutrophils", "value": anc, "unit": "10*9/L", "time": when}]}

    ordered = match_medications(["clozapine"])
    within = assess(newborn(4.5, "2026-07-02T09:00:00Z"))
    assert [f.grade for f in within.findings if f.code == "neutropenia"] == [1]
    assert indicator(within) == "info"
    assert order_select_cards(within, ordered, 30, {"label": "t"}, []) == []
    below = assess(newborn(0.5, "2026-07-20T09:00:00Z"))
    cards = order_select_cards(below, ordered, 30, {"label": "t"}, [])
    assert len(cards) == 1 and "ordered with neutropenia" in cards[0]["summary"]
