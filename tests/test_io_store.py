"""The embedded DuckDB store and `leukowatch ingest` (real DuckDB files in tmp_path)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow
import pytest

from leukowatch.assess import assess
from leukowatch.cli import main
from leukowatch.io import read_path, read_text
from leukowatch.io.store import (
    SCHEMA_VERSION,
    default_db_path,
    list_patients,
    load_patient_request,
    open_store,
    schema_version,
    write_result,
)
from leukowatch.model import InputError, Patient

DATA = Path(__file__).parent / "data"


def _count(db: Path, table: str) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_migrations_recorded_and_reopen_is_a_no_op(tmp_path):
    db = tmp_path / "s.duckdb"
    open_store(db).close()
    con = open_store(db)
    assert schema_version(con) == SCHEMA_VERSION
    assert con.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_default_path_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LEUKOWATCH_DB", str(tmp_path / "x.duckdb"))
    assert default_db_path() == tmp_path / "x.duckdb"
    monkeypatch.delenv("LEUKOWATCH_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "leukowatch" / "leukowatch.duckdb"


def test_ingest_is_idempotent_and_reconciles(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    files = [str(DATA / "io_oru_mixed.hl7"), str(DATA / "io_oru_mllp.hl7"), str(DATA / "io_labs.csv"),
             str(DATA / "io_bundle_mixed.json"), str(DATA / "io_omop")]
    assert main(["ingest", *files, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "io_labs.csv: read 11 = accepted 7 + rejected 4; 7 new observations stored" in out
    n = _count(db, "observations")
    assert n == 5 + 1 + 7 + 5 + 5
    assert main(["ingest", *files, "--db", str(db)]) == 0
    assert "already ingested" in capsys.readouterr().out
    assert _count(db, "observations") == n
    # the same message inside another file (different sha256) adds nothing either
    copy = tmp_path / "again.hl7"
    copy.write_bytes((DATA / "io_oru_mllp.hl7").read_bytes() + b"\r")
    assert main(["ingest", str(copy), "--db", str(db)]) == 0
    assert _count(db, "observations") == n
    assert _count(db, "rejects") == 5 + 0 + 4 + 3 + 3
    con = duckdb.connect(str(db), read_only=True)
    read, acc, rej = con.execute("SELECT sum(read), sum(accepted), sum(rejected) FROM ingests").fetchone()
    assert read == acc + rej
    src = con.execute("SELECT source_id, source_line FROM observations WHERE analyte = 'wbc' AND value = 3.1"
                      ).fetchone()
    assert src == ("MSG-0002", 4)
    con.close()


def test_load_patient_request_feeds_assess_with_history(tmp_path):
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(DATA / "io_oru_mixed.hl7"), str(DATA / "io_oru_mllp.hl7"), "--db", str(db)]) == 0
    con = open_store(db)
    assert [p["patient_id"] for p in list_patients(con)] == ["H100"]
    request = load_patient_request(con, "H100")
    assert request["patient"]["sex"] == "female" and request["patient"]["birth_date"] == "1970-01-02"
    wbc = [o for o in request["observations"] if o["analyte"] == "wbc"]
    assert [o["value"] for o in wbc] == [2.4, 3.1]  # two draws, oldest first
    assert any(o["value"] == "<0.1" for o in request["observations"])  # comparator survives
    a = assess(request)
    assert a.finding("leukopenia") and a.counts["wbc"].value == pytest.approx(3.1)  # latest draw
    with pytest.raises(InputError):
        load_patient_request(con, "nobody")
    con.close()


def test_medicines_become_chemotherapy_dates(tmp_path):
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(DATA / "io_omop"), "--db", str(db)]) == 0
    con = open_store(db)
    request = load_patient_request(con, "101")
    assert request["chemotherapy"]["dose_dates"] == ["2026-01-20"]
    assert {m["name"] for m in request["medications"]} == {"clozapine 100 mg", "cyclophosphamide"}
    con.close()


def test_a_failure_mid_file_leaves_nothing(tmp_path):
    db = tmp_path / "s.duckdb"
    con = open_store(db)
    result = read_path(DATA / "io_labs.csv")
    # a person with results (a person without any is never written) and a fact no column can hold
    result.patients.append(Patient(id="H1", age_years="not a number"))  # type: ignore[arg-type]
    with pytest.raises((duckdb.Error, pyarrow.ArrowException)):  # fails while writing patients
        write_result(con, result, "labs.csv", "sha-x", "csv")
    for table in ("observations", "patients", "ingests", "rejects"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
    result.patients.pop()
    summary = write_result(con, result, "labs.csv", "sha-x", "csv")
    assert summary.stored == 7
    con.close()


def test_unreadable_file_exits_2_and_stores_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Bundle", "entry": ')
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(bad), str(DATA / "io_oru_mllp.hl7"), "--db", str(db)]) == 2
    assert "nothing stored from" in capsys.readouterr().err
    assert _count(db, "observations") == 1


def test_read_json_cli(capsys):
    assert main(["read", str(DATA / "io_labs.csv"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["read"] == data["accepted"] + data["rejected"] == 11
    assert data["observations"][1]["value"] == 3.2 and data["rejects"][0]["locator"] == "line 8 column unit"


def test_read_table_cli_prints_reconciliation(capsys):
    assert main(["read", str(DATA / "io_oru_mixed.hl7")]) == 0
    out = capsys.readouterr().out
    assert "read 10 = accepted 5 + rejected 5" in out and "OBX[6]-6" in out


def test_store_dates_are_dates(tmp_path):
    db = tmp_path / "s.duckdb"
    main(["ingest", str(DATA / "io_bundle_mixed.json"), "--db", str(db)])
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT start FROM medications WHERE name LIKE 'methimazole%'").fetchone()[0] == date(2026, 1, 15)
    con.close()


def _rows(db, sql):
    """The rows of one query on the store, opened read-only and closed again."""
    con = open_store(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _ingest_csv(tmp_path, capsys, text, *extra):
    """`leukowatch ingest` of one CSV (its text) into a new store: the store and the summary line."""
    labs, db = tmp_path / "labs.csv", tmp_path / "s.duckdb"
    labs.write_text(text)
    assert main(["ingest", str(labs), "--db", str(db), *extra]) == 0
    return db, capsys.readouterr().out


def test_cli_ingest_rejects_future_dated_results(tmp_path, capsys):
    """A result dated beyond the clock skew is a reject with its reason, as in the service and the feed."""
    rejects = tmp_path / "rejects.csv"
    db, out = _ingest_csv(tmp_path, capsys, "patient_id,time,analyte,value,unit\n"
                                            "F1,2020-01-05T09:00:00Z,wbc,3.2,10*9/L\n"
                                            "F1,2999-01-05T09:00:00Z,wbc,2.2,10*9/L\n", "--rejects", str(rejects))
    assert "read 2 = accepted 1 + rejected 1" in out
    assert "future" in rejects.read_text().lower()
    assert _rows(db, "SELECT count(*) FROM observations") == [(1,)]


def test_an_undated_result_is_not_stored_in_a_history(tmp_path, capsys):
    """An undated ANC of 0.3 joined the latest draw (a normal 4.0 a week later), so the history said the
    count was still low at the latest result; now it is a reject with its reason."""
    undated, dated = tmp_path / "undated.csv", tmp_path / "dated.csv"
    undated.write_text("patient_id,analyte,value,unit\nU1,neutrophils,0.3,10*9/L\n")
    dated.write_text("patient_id,time,analyte,value,unit\nU1,2026-11-25T08:00:00Z,neutrophils,4.0,10*9/L\n")
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(undated), str(dated), "--db", str(db)]) == 0
    assert "read 1 = accepted 0 + rejected 1" in capsys.readouterr().out
    assert _rows(db, "SELECT value FROM observations") == [(4.0,)]
    assert "no observation time" in _rows(db, "SELECT reason FROM rejects")[0][0]


def test_a_result_dated_before_the_birth_date_is_not_stored(tmp_path, capsys):
    """Stored, it made every page of the patient a 422 (the assessment refuses a result before birth)."""
    db, out = _ingest_csv(tmp_path, capsys, "patient_id,sex,birth_date,time,analyte,value,unit\n"
                                            "B1,female,2026-06-01,2026-01-20T08:00:00Z,neutrophils,0.3,10*9/L\n"
                                            "B1,female,2026-06-01,2026-07-20T08:00:00Z,neutrophils,2.0,10*9/L\n")
    assert "read 2 = accepted 1 + rejected 1" in out
    assert main(["history", "B1", "--db", str(db)]) == 0
    assert "before the patient's birth date" in _rows(db, "SELECT reason FROM rejects")[0][0]


def test_a_file_whose_every_result_is_refused_creates_no_patient(tmp_path):
    """`ingest` and `POST /api/ingest` write through here: the patient list holds only people with a
    stored result or temperature, never an empty row for a file the store refused."""
    message = "\r".join([
        "MSH|^~\\&|LAB|CITY|LW|WARD|202611050800||ORU^R01|R-1|P|2.5.1",
        "PID|1||RF1^^^CITY^MR||DOE^ALEX||19700101|F",
        "OBR|1|O-1|F-1|58410-2^CBC^LN",  # no OBR-7: the counts below have no time
        "OBX|1|NM|751-8^ANC^LN||0.3|10*9/L|||||F",
        "OBX|2|NM|8310-5^Body temperature^LN||38.9|Cel|||||F|||203011050800",  # years in the future
    ])
    con = open_store(tmp_path / "s.duckdb")
    summary = write_result(con, read_text(message, "hl7", "r.hl7"), "r.hl7", "sha-r", "hl7", reject_future=True)
    assert (summary.read, summary.accepted, summary.rejected, summary.stored) == (2, 0, 2, 0)
    reasons = sorted(r.reason for r in summary.rejects)
    assert reasons[0].startswith("body temperature dated 2030-11-05T08:00:00+00:00, in the future")
    assert reasons[1].startswith("no observation time")
    assert list_patients(con) == []
    assert con.execute("SELECT count(*) FROM temperatures").fetchone() == (0,)
    con.close()
