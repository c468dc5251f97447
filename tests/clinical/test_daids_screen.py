"""DAIDS in the population screen grades as `assess` does: age in days per result, every band edge.

The screen compiles the same criteria rows into SQL (population/relations.py); persons here are
newborns on days 0-8, children either side of the sixth birthday and adults, each with values on
the band's cut-offs, read through a real DuckDB screen and compared finding by finding.
"""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from leukowatch.assess import assess
from leukowatch.population.screen import screen

RESULT = date(2026, 11, 20)
#: (birth date, analyte, values): newborn ANC/WBC edges by age in days, lymphocytes by completed years.
PERSONS: list[tuple[date | None, float | None, str, tuple[float, ...]]] = [
    (RESULT - timedelta(days=1), None, "neutrophils", (0.9, 1.49, 1.5, 2.0)),
    (RESULT - timedelta(days=2), None, "neutrophils", (0.7, 0.75, 0.999, 1.0)),
    (RESULT - timedelta(days=7), None, "neutrophils", (0.5, 0.749, 0.8)),
    (RESULT - timedelta(days=8), None, "neutrophils", (0.399, 0.4, 0.8, 0.9)),
    (RESULT - timedelta(days=3), None, "wbc", (2.4, 2.5, 5.5, 6.999, 7.0)),
    (date(2020, 11, 21), None, "lymphocytes", (0.3, 0.6)),  # the day before the sixth birthday
    (date(2020, 11, 20), None, "lymphocytes", (0.3, 0.6, 0.649, 0.65)),  # the sixth birthday
    (date(1980, 1, 1), None, "neutrophils", (0.399, 0.4, 1.0, 1.01)),
    (None, 40.0, "wbc", (0.99, 2.0, 2.499, 2.5)),
    (None, 0.0, "neutrophils", (0.3,)),  # age in days unknown: not graded
]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for i, (birth, age, analyte, values) in enumerate(PERSONS):
        for j, value in enumerate(values):
            rows.append({"patient_id": f"p{i}-{j}", "time": f"{RESULT}T08:00:00Z", "analyte": analyte,
                         "value": value, "unit": "10*9/L", "sex": "female",
                         "birth_date": birth.isoformat() if birth else "", "age_years": age})
    return rows


def _per_patient(row: dict[str, Any]) -> tuple[int | None, str | None] | None:
    patient = {"sex": row["sex"]}
    if row["birth_date"]:
        patient["birth_date"] = row["birth_date"]
    if row["age_years"] is not None:
        patient["age_years"] = row["age_years"]
    a = assess({"patient": patient, "criteria": "daids-v2.1", "observations": [
        {"analyte": row["analyte"], "value": row["value"], "unit": row["unit"], "time": row["time"]}]})
    return next(((f.grade, f.term) for f in a.findings), None)


def test_screen_grades_daids_as_assess(tmp_path: Path) -> None:
    rows = _rows()
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "age_years": "" if r["age_years"] is None else r["age_years"]} for r in rows)
    screen(str(path), tmp_path / "out", engine="duckdb", criteria="daids-v2.1")
    parts = tmp_path / "out" / "findings.parquet" / "**" / "*.parquet"
    found = duckdb.sql(f"select patient_id, grade, term from read_parquet('{parts}')")
    screened = {pid: (None if g is None else int(g), t) for pid, g, t in found.fetchall()}
    expected = {r["patient_id"]: got for r in rows if (got := _per_patient(r)) is not None}
    assert screened == expected
    assert expected["p3-0"] == (4, "Absolute Neutrophil Count (ANC), Low")  # the table holds real DAIDS grades
    assert expected["p5-0"] == (None, None)  # 5 completed years: no DAIDS lymphocyte criteria
