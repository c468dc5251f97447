"""`leukowatch history` over a real DuckDB store filled through its public functions."""

from __future__ import annotations

import json
from pathlib import Path

import history_cases as hc
import pytest

from leukowatch.cli import main
from leukowatch.io.store import list_patients, open_store, store_request


def _store(tmp_path: Path, *requests: dict) -> str:
    db = tmp_path / "lw.duckdb"
    con = open_store(db)
    try:
        for i, req in enumerate(requests):
            store_request(con, req, source=f"case-{i}")
    finally:
        con.close()
    return str(db)


def test_history_json_from_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path, hc.clozapine())
    assert main(["history", "h1", "--db", db, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["patient"]["id"] == "h1"
    (t,) = out["drug_timing"]
    assert (t["medicine"], t["days_to_onset"], t["onset"], t["dechallenge"]) == ("clozapine", 42, "typical", "positive")
    assert out["episodes"]["neutropenia"][0]["nadir_value"] == 0.6


def test_history_text_and_chemotherapy_dates_survive_the_store(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path, hc.chemotherapy_cycles())
    assert main(["history", "h1", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "Chemotherapy nadir pattern: consistent" in text
    assert "4 of 4 cycles" in text and "typical" in text


def test_duffy_null_flag_survives_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path, hc.steady(1.3, duffy_null=True))
    assert main(["history", "h1", "--db", db, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "duffy_null" and "neutropenia" not in out["episodes"]
    assert main(["history", "h1", "--db", db, "--json", "--profile", "standard"]) == 0
    assert "neutropenia" in json.loads(capsys.readouterr().out)["episodes"]


def test_storing_twice_adds_nothing(tmp_path: Path) -> None:
    db = _store(tmp_path, hc.clozapine(), hc.clozapine())
    con = open_store(db, read_only=True)
    try:
        (p,) = list_patients(con)
    finally:
        con.close()
    assert p["n_observations"] == 13 * 3


def test_unknown_patient_and_missing_store_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _store(tmp_path, hc.clozapine())
    assert main(["history", "nobody", "--db", db]) == 2
    assert "patient_id" in capsys.readouterr().err
    assert main(["history", "h1", "--db", str(tmp_path / "none.duckdb")]) == 2
