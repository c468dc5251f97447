"""Interop follow-ups: exact duplicates are rejected by every reader with the same key the population
screen uses, and `leukowatch assess FILE` takes CSV, Parquet and OMOP (with --patient)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leukowatch.assess import assess
from leukowatch.demo import generate
from leukowatch.demo.export import write_demo
from leukowatch.io import read_path, read_text, request_from_path, request_from_text
from leukowatch.io.result import DUPLICATE_KEY, RESULT_KEY
from leukowatch.model import InputError
from leukowatch.population import screen

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukowatch" / "examples" / "febrile-neutropenia.json"
LABS_CSV = DATA / "io_labs.csv"
HEADER = "patient_id,sex,birth_date,time,analyte,value,unit,low,high\n"
ROW = "H1,male,1987-03-02,2026-01-05T09:00:00Z,wbc,3200,/uL,4000,11000\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leukowatch.cli", *args], capture_output=True, text=True,
                          timeout=120)


def _dups(result) -> dict[str, str]:
    return {r.locator: r.reason for r in result.rejects if r.kind == "duplicate"}


# ---------------------------------------------------------------------------------------------
# 1. Duplicates


def test_the_key_is_the_screens_key_plus_the_value() -> None:
    assert RESULT_KEY == ("patient_id", "time", "analyte", "percent")
    assert DUPLICATE_KEY[:len(RESULT_KEY)] == RESULT_KEY and {"value", "unit"} <= set(DUPLICATE_KEY)


def test_csv_exact_duplicate_names_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_text(HEADER + ROW + ROW                               # lines 2 and 3: the very same row
                    + ROW.replace("3200,/uL,4000,11000", "3.2,K/uL,,")  # line 4: same result, other unit
                    + ROW.replace("3200", "3300"), encoding="utf-8")  # line 5: other value: a conflict, kept
    r = read_path(path)
    assert (r.read, r.accepted, r.rejected) == (4, 2, 2) and r.reconciles()
    assert _dups(r) == {"line 3": "duplicate of line 2: same patient, time, analyte, value and unit",
                        "line 4": "duplicate of line 2: same patient, time, analyte, value and unit"}
    assert [i.locator for i in r.items] == ["line 2", "line 5"]
    assert r.summary() == "read 4 = accepted 2 + rejected 2 (0 skipped, 2 duplicate, 0 invalid)"
    # a duplicate never stops an assessment (it is not unreadable data)
    request = request_from_path(path)
    assert len(request["observations"]) == 2


def test_parquet_duplicate_names_the_first_row(tmp_path: Path) -> None:
    rows = [dict(zip(HEADER.strip().split(","), line.split(","), strict=True))
            for line in (ROW.strip(), ROW.strip())]
    pq.write_table(pa.Table.from_pylist([{k: (v or None) for k, v in row.items()} for row in rows]),
                   tmp_path / "labs.parquet")
    r = read_path(tmp_path / "labs.parquet")
    assert (r.read, r.accepted, r.rejected) == (2, 1, 1)
    assert _dups(r) == {"row 2": "duplicate of row 1: same patient, time, analyte, value and unit"}


def test_omop_repeated_row_and_repeated_measurement_id(tmp_path: Path) -> None:
    folder = tmp_path / "omop"
    folder.mkdir()
    lines = (DATA / "io_omop" / "measurement.csv").read_text().splitlines()
    first = lines[1]  # measurement_id 1
    again_other_id = "9" + first[1:]  # the same result under a new measurement_id
    other_value_same_id = first.replace(",2.4,", ",3.4,")  # measurement_id 1 again, changed value
    (folder / "measurement.csv").write_text("\n".join([*lines, again_other_id, other_value_same_id]) + "\n")
    r = read_path(folder)
    assert r.reconciles() and (r.read, r.accepted) == (10, 5)
    assert _dups(r) == {
        "measurement_id 9": "duplicate of measurement_id 1: same patient, time, analyte, value and unit",
        "measurement row 10": "duplicate of measurement row 1 (measurement_id 1 again)"}


def test_hl7_same_obx_twice_in_one_message() -> None:
    text = (DATA / "io_oru_mllp.hl7").read_bytes().decode("utf-8")  # keep the CR separators
    obx = next(seg for seg in text.split("\r") if seg.startswith("OBX|1|"))
    doubled = text.replace(obx, obx + "\r" + obx.replace("OBX|1|", "OBX|2|", 1), 1)
    single, r = read_text(text, "hl7", "one"), read_text(doubled, "hl7", "two")
    assert r.read == single.read + 1 and r.accepted == single.accepted and r.reconciles()
    (locator, reason), = _dups(r).items()
    assert reason.startswith("duplicate of OBX[1]:") and locator.startswith("OBX[")
    # a correction with the same value is a correction, not a duplicate
    corrected = text.replace(obx, obx + "\r" + obx.replace("|F", "|C"), 1)
    rc = read_text(corrected, "hl7", "corr")
    assert not _dups(rc) and any(x.reason.startswith("superseded by the corrected result") for x in rc.rejects)


def test_fhir_same_observation_id_twice_and_same_result_under_two_ids() -> None:
    text = (DATA / "io_bundle_mixed.json").read_text()
    bundle = json.loads(text)
    wbc = next(e for e in bundle["entry"] if e["resource"].get("id") == "o-wbc")
    (drawn,) = [o.time for o in read_text(text, "fhir", "mixed").observations if o.analyte == "wbc"]
    same_id = copy.deepcopy(wbc)
    same_id["resource"]["valueQuantity"]["value"] = 9999  # a second, different resource with the same id
    new_id = copy.deepcopy(wbc)
    new_id["resource"]["id"] = "o-wbc-copy"
    new_id["fullUrl"] = "urn:uuid:o-wbc-copy"
    new_id["resource"]["effectiveDateTime"] = drawn.isoformat()  # o-wbc takes its time from the report
    bundle["entry"] += [same_id, new_id]
    n = len(bundle["entry"])
    first = f"entry[{bundle['entry'].index(wbc)}].resource"
    r = read_text(json.dumps(bundle), "fhir", "dups")
    assert r.reconciles()
    assert _dups(r) == {f"entry[{n - 2}].resource": f"duplicate of {first} (the same Observation/o-wbc again)",
                        f"entry[{n - 1}].resource": f"duplicate of {first}: same patient, time, analyte, value "
                                                    "and unit"}
    assert [o.value for o in r.observations if o.analyte == "wbc"] == [pytest.approx(2.6)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_demo(generate(150, 7), out, subset_size=5)


def test_demo_duplicates_read_and_screen_agree(demo: tuple[Path, dict], tmp_path: Path) -> None:
    """The demo injects exact duplicate rows: the readers reject each of them (naming the first
    occurrence) and the counts equal the population screen's."""
    out, manifest = demo
    dirty = pq.read_table(out / "dirty_rows.parquet").to_pylist()
    injected = {d["row"] + 1 for d in dirty if d["kind"] == "duplicate_row"}  # 0-based -> "row N"
    assert injected, "the demo should inject duplicates"
    table = read_path(out / "observations.parquet")
    omop = read_path(out / "omop")
    for r in (table, omop):
        assert r.reconciles() and r.read == manifest["observations"]["rows"]
        assert Counter(x.kind for x in r.rejects)["duplicate"] == len(injected)
    for r in (table, omop):  # each pair (rejected row, the first one it names) holds one injected copy
        pairs = [(int(loc.split()[-1]), int(reason.split(":")[0].split()[-1])) for loc, reason in _dups(r).items()]
        assert all(dup in injected or first in injected for dup, first in pairs)
        assert all(reason.startswith("duplicate of ") for reason in _dups(r).values())
    s = screen([str(out / n) for n in ("observations.parquet", "medications.parquet", "temperatures.parquet")],
               tmp_path / "screen")
    assert s.reconciliation["duplicates"] == len(injected)
    assert (s.reconciliation["read"], s.reconciliation["accepted"], s.reconciliation["rejected"]) == (
        table.read, table.accepted, table.rejected)


# ---------------------------------------------------------------------------------------------
# 2. assess FILE for CSV, Parquet and OMOP


def test_request_from_path_picks_one_patient_and_ignores_the_others_rejects() -> None:
    # H2 and H3 have unreadable rows (a WBC in g/dL, an unknown analyte): they do not stop H1
    request = request_from_path(LABS_CSV, patient="H1")
    assert request["patient"] == {"id": "H1", "sex": "male", "birth_date": "1987-03-02"}
    assert len(request["observations"]) == 5
    a = assess(request)
    assert a.finding("leukopenia") and a.finding("neutropenia")
    with pytest.raises(InputError) as err:  # H2's unreadable WBC stops H2's assessment, naming the line
        request_from_path(LABS_CSV, patient="H2")
    assert err.value.field == "line 8 column unit"
    with pytest.raises(InputError) as err:
        request_from_path(LABS_CSV)
    assert "holds results of 3 patients (H1, H2, H3)" in err.value.problem and "--patient" in err.value.problem


def test_patient_works_for_hl7_too() -> None:
    text = (DATA / "io_oru_mllp.hl7").read_text()
    assert request_from_text(text, "hl7", "mllp", "H100")["patient"]["id"] == "H100"
    with pytest.raises(InputError) as err:
        request_from_text(text, "hl7", "mllp", "H999")
    assert err.value.field == "--patient" and "(it holds: H100)" in err.value.problem


def test_cli_assess_csv_with_patient() -> None:
    p = run("assess", str(LABS_CSV), "--patient", "H1", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert {f["code"] for f in d["findings"]} >= {"leukopenia", "neutropenia"}
    assert d["counts"]["wbc"]["value"] == pytest.approx(2.9)  # the latest draw (K/uL)


def test_cli_assess_parquet_one_patient_needs_no_patient_flag(tmp_path: Path) -> None:
    rows = [{"patient_id": "Q1", "time": "2026-03-01T08:00:00Z", "analyte": a, "value": v, "unit": u}
            for a, v, u in (("wbc", 2.1, "10*9/L"), ("neutrophils", 600.0, "/uL"), ("neutrophils", 600.0, "/uL"))]
    path = tmp_path / "one.lab"  # no telling suffix: detected by the PAR1 magic
    pq.write_table(pa.Table.from_pylist(rows), path)
    p = run("assess", str(path), "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["counts"]["neutrophils"]["value"] == pytest.approx(0.6)
    assert {f["code"] for f in d["findings"]} >= {"leukopenia", "neutropenia"}
    assert run("assess", str(path), "--format", "parquet", "--patient", "Q1", "--json").returncode == 0


def test_cli_assess_omop_folder() -> None:
    p = run("assess", str(DATA / "io_omop"), "--patient", "101", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["counts"]["neutrophils"]["value"] == pytest.approx(0.9)  # 900 /uL, the 2026-02-08 draw
    assert [m["generic"] for m in d["possible_causes"]["medications"]][:1] == ["clozapine"]  # from DRUG_EXPOSURE


@pytest.mark.parametrize(("args", "message"), [
    ((str(LABS_CSV),), "holds results of 3 patients (H1, H2, H3); pick one with --patient ID"),
    ((str(DATA / "io_omop"),), "holds results of 3 patients (101, 102, 103)"),
    ((str(DATA / "io_omop"), "--patient", "999"), "--patient: no patient '999'"),
    ((str(DATA / "io_omop"), "--format", "hl7"), "is a directory"),
    ((str(LABS_CSV), "--patient", "H3"), "line 12 column analyte: unknown analyte 'bananas'"),
    ((str(EXAMPLE), "--patient", "X"), "--patient: picks one person of a lab file"),
])
def test_cli_assess_table_errors_exit_2_without_traceback(args: tuple[str, ...], message: str) -> None:
    p = run("assess", *args)
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr


def test_cli_read_prints_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_text(HEADER + ROW + ROW, encoding="utf-8")
    p = run("read", str(path))
    assert p.returncode == 0, p.stderr
    assert "duplicate of line 2" in p.stdout
    assert "read 2 = accepted 1 + rejected 1 (0 skipped, 1 duplicate, 0 invalid)" in p.stdout
