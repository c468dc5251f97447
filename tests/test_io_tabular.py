"""CSV, Parquet and OMOP CDM readers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leukowatch.io import read_path
from leukowatch.model import InputError

DATA = Path(__file__).parent / "data"


def test_csv_mixed_units_comparators_and_rejects():
    r = read_path(DATA / "io_labs.csv")
    assert (r.read, r.accepted, r.rejected) == (11, 7, 4)
    wbc = [o for o in r.observations if o.analyte == "wbc" and o.patient_id == "H1"]
    assert [w.value for w in wbc] == pytest.approx([3.2, 2.9])  # /uL and K/uL
    assert wbc[0].reference_range.low == pytest.approx(4.0)  # 4000 /uL
    assert any(o.comparator == "<" for o in r.observations)
    locators = [x.locator for x in r.rejects]
    assert locators == ["line 8 column unit", "line 9 column unit", "line 10 column time", "line 12 column analyte"]
    assert {p.id: p.sex for p in r.patients} == {"H1": "male", "H2": "female", "H3": "female"}


def test_csv_with_renamed_columns_and_semicolons(tmp_path):
    path = tmp_path / "lab.csv"
    path.write_text("MRN;DRAWN;LOINC;RESULT;UNITS\nA7;2026-02-01T08:00:00Z;751-8;0,8;10*9/L\n"
                    "A7;2026-02-01T08:00:00Z;9999-9;1;mg\n", encoding="utf-8")
    r = read_path(path, columns={"patient_id": "MRN", "time": "DRAWN", "loinc": "LOINC", "value": "RESULT",
                                 "unit": "UNITS"})
    assert r.accepted == 1 and r.observations[0].value == pytest.approx(0.8)  # decimal comma
    assert r.rejects[0].kind == "skipped"


def test_csv_missing_column_is_named(tmp_path):
    path = tmp_path / "lab.csv"
    path.write_text("patient_id,analyte,value\nX,wbc,3\n")
    with pytest.raises(InputError) as err:
        read_path(path)
    assert err.value.field == "column unit"


def test_parquet_same_as_csv(tmp_path):
    with open(DATA / "io_labs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    table = pa.Table.from_pylist([{k: (v or None) for k, v in row.items()} for row in rows])
    pq.write_table(table, tmp_path / "labs.parquet")
    r = read_path(tmp_path / "labs.parquet")
    assert (r.read, r.accepted, r.rejected) == (11, 7, 4)
    assert r.rejects[0].locator == "row 7 column unit"


def test_synthea_csv_is_recognised(samples_dir):
    r = read_path(samples_dir / "synthea_observations_excerpt.csv")
    assert r.reconciles() and r.read == 990
    wbc = sorted(o.value for o in r.observations if o.analyte == "wbc")
    assert wbc == [4.8, 6.1, 7.4, 8.3, 9.1]
    assert all(x.kind == "skipped" for x in r.rejects)


def test_omop_csv_folder_with_person_and_drugs():
    r = read_path(DATA / "io_omop")
    assert (r.read, r.accepted, r.rejected) == (8, 5, 3)
    by_id = {i.source_id: i.observation for i in r.items}
    assert by_id["1"].analyte == "wbc" and by_id["1"].value == pytest.approx(2.4)
    assert by_id["2"].comparator == "<"  # operator_concept_id 4171756
    assert by_id["3"].value == pytest.approx(0.9)  # 900 /uL (unit concept 8647)
    assert by_id["7"].percent  # concept 0 but source value 770-8
    people = {p.id: p for p in r.patients}
    assert people["101"].sex == "female" and people["101"].birth_date.isoformat() == "1968-05-14"
    assert people["102"].birth_date.isoformat() == "1990-07-01"  # year only
    assert [m.name for _, m in r.medications] == ["clozapine 100 mg", "cyclophosphamide"]


def test_omop_parquet_and_duckdb(tmp_path):
    con = duckdb.connect(str(tmp_path / "cdm.duckdb"))
    for name in ("measurement", "person", "drug_exposure"):
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv('{DATA / 'io_omop' / (name + '.csv')}')")
        con.execute(f"COPY {name} TO '{tmp_path / (name + '.parquet')}' (FORMAT parquet)")
    con.close()
    from_db = read_path(tmp_path / "cdm.duckdb")
    parquet_dir = tmp_path / "pq"
    parquet_dir.mkdir()
    for name in ("measurement", "person", "drug_exposure"):
        shutil.move(tmp_path / f"{name}.parquet", parquet_dir / f"{name}.parquet")
    from_parquet = read_path(parquet_dir / "measurement.parquet", "omop")
    for r in (from_db, from_parquet):
        assert (r.read, r.accepted, r.rejected) == (8, 5, 3)
        assert len(r.patients) == 3 and len(r.medications) == 2
