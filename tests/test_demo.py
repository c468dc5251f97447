"""The demo population: determinism, files, formats, and truth checked by the real engines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import hl7
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B.bundle import Bundle

from leukowatch.cli import main
from leukowatch.demo import generate
from leukowatch.demo.export import write_demo
from leukowatch.demo.labs import add_dirty, lab_rows
from leukowatch.demo.scenarios import FINDINGS, SCENARIOS
from leukowatch.demo.validate import flags_from_assess, validate
from leukowatch.rules.timeline import Point, cyclic_neutropenia

#: Findings whose truth the data makes unambiguous and both engines must reproduce exactly.
EXACT = ("neutropenia", "lymphocytopenia", "chronic_neutropenia", "cyclic", "drug_associated",
         "febrile_neutropenia", "pancytopenia")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    manifest = write_demo(generate(400, 11), out, subset_size=30)
    return out, manifest


@pytest.fixture(scope="module")
def assessed(demo: tuple[Path, dict]) -> tuple:
    return flags_from_assess(demo[0])


def test_same_seed_same_population_other_seed_differs() -> None:
    a, b, c = generate(300, 3), generate(300, 3), generate(300, 4)
    for key in ("time", "wbc", "neutrophils", "hemoglobin"):
        assert np.array_equal(a.draws[key], b.draws[key])
    assert np.array_equal(a.truth["neutropenia_episodes"], b.truth["neutropenia_episodes"])
    ra, rb = lab_rows(a), lab_rows(b)
    assert np.array_equal(ra.value, rb.value) and np.array_equal(ra.unit, rb.unit)
    assert not np.array_equal(a.truth["scenario"], c.truth["scenario"])


def test_every_scenario_children_and_duffy_null_present() -> None:
    pop = generate(2000, 7)
    assert {s.name for s in SCENARIOS} <= set(pop.persons.scenario)
    assert pop.persons.child.any() and (~pop.persons.child).any()
    duffy = pop.persons.duffy_null
    assert 0.05 < duffy.mean() < 0.15
    # the low-normal scenario is made of Duffy-null adults only, and Duffy-null persons occur elsewhere too
    dln = pop.persons.scenario == "duffy_low_normal"
    assert duffy[dln].all() and not pop.persons.child[dln].any()
    assert (duffy & ~dln).any()


def test_files_and_manifest_counts(demo: tuple[Path, dict]) -> None:
    out, manifest = demo
    for name, rows in manifest["files"].items():
        if "*" in name:
            assert len(list(out.glob(name))) == rows > 0
        else:
            assert pq.read_metadata(out / name).num_rows == rows, name
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    obs = pq.read_table(out / "observations.parquet")
    assert obs.column_names[:10] == ["patient_id", "time", "analyte", "loinc", "value", "unit", "low", "high", "sex",
                                     "birth_date"]
    units = set(obs.column("unit").to_pylist())
    assert {"10*9/L", "K/uL", "/uL", "10*3/uL", "%"} <= units
    assert manifest["observations"]["rows"] == manifest["observations"]["clean"] + manifest["dirty_rows"]["total"]


def test_dirty_rows_are_what_the_manifest_says(demo: tuple[Path, dict]) -> None:
    out, manifest = demo
    obs = pq.read_table(out / "observations.parquet").to_pandas()
    dirty = pq.read_table(out / "dirty_rows.parquet").to_pandas()
    counts = dirty["kind"].value_counts().to_dict()
    assert counts == {k: v for k, v in manifest["dirty_rows"].items() if k != "total" and v}
    rows = obs.iloc[dirty["row"]]
    kinds = dirty["kind"].to_numpy()
    assert rows["unit"][kinds == "missing_unit"].isna().all()
    assert (rows["value"][kinds == "negative_value"] < 0).all()
    assert (rows["value"][kinds == "implausible_wbc"] == 5000).all()
    dup = rows[kinds == "duplicate_row"]
    assert len(obs.merge(dup, how="inner")) >= 2 * len(dup)  # each duplicate has its identical original


def test_per_patient_engine_agrees_with_truth(demo: tuple[Path, dict], assessed: tuple) -> None:
    """The real per-patient rules (assess's draws, timeline, infection, drug timing) on every person."""
    out, manifest = demo
    flags, counts = assessed
    # every injected dirty row, and only those, ends in the rejects
    assert counts["rejected"] == manifest["dirty_rows"]["total"]
    assert counts["read"] == counts["accepted"] + counts["rejected"] == manifest["observations"]["rows"]
    report = validate(out / "truth.parquet", {"flags": flags})
    for finding in EXACT:
        s = report.stat(finding)
        assert s.truth_positive > 0, finding
        assert (s.fp, s.fn) == (0, 0), (finding, [m for m in report.mismatches if m.finding == finding][:5])
    truth = pq.read_table(out / "truth.parquet").to_pandas().set_index("patient_id")
    got = flags.to_pandas().set_index("patient_id")["neutropenia_episodes"]
    assert (got == truth.loc[got.index, "neutropenia_episodes"]).all()


def test_cyclic_persons_are_cyclic_by_the_projects_rule_on_their_dense_sampling() -> None:
    """The 8 weeks of CBCs 3x/week of every cyclic person alone satisfy rules.timeline.cyclic_neutropenia
    (the whole history, with earlier sparse nadir visits, is checked by the validation tests)."""
    pop = generate(600, 5)
    d = pop.draws
    for p in np.flatnonzero(pop.persons.scenario == "cyclic"):
        sel = np.flatnonzero(d["pid"] == p)[-24:]
        points = [Point(t.astype("datetime64[s]").item(), float(v), bool(low))
                  for t, v, low in zip(d["time"][sel], d["neutrophils"][sel], d["anc_low"][sel], strict=True)]
        assert cyclic_neutropenia(points).status == "suspected", pop.persons.patient_id[p]


def test_validate_accepts_pandas_and_lists_per_finding(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    truth = pq.read_table(out / "truth.parquet").to_pandas()
    perfect = truth[["patient_id", *FINDINGS]]
    report = validate(out / "truth.parquet", {"flags": perfect})
    assert not report.mismatches and report.stat("neutropenia").sensitivity == 1.0
    # long form: one table per finding listing the flagged persons; missing findings are "not screened"
    neutro = truth.loc[truth.neutropenia, ["patient_id"]].iloc[1:]
    report = validate(out / "truth.parquet", {"neutropenia": neutro})
    s = report.stat("neutropenia")
    assert (s.tp, s.fn, s.fp) == (len(neutro), 1, 0)
    assert report.not_screened == [f for f in FINDINGS if f != "neutropenia"]
    assert "not screened" in report.table()


def test_fhir_bundles_are_valid_r4(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    files = sorted((out / "fhir").glob("*.json"))[:4]
    obs = pq.read_table(out / "observations.parquet").to_pandas()
    dirty_rows = set(pq.read_table(out / "dirty_rows.parquet").column("row").to_pylist())
    clean = obs.drop(index=list(dirty_rows))
    for f in files:
        data = json.loads(f.read_text())
        bundle = Bundle.model_validate(data)
        kinds = [e.resource.__resource_type__ for e in bundle.entry]
        assert bundle.type == "collection" and kinds[0] == "Patient"
        labs = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Observation"
                and e.resource.category[0].coding[0].code == "laboratory"]
        assert len(labs) == (clean["patient_id"] == f.stem).sum()


def test_hl7_messages_parse(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    for f in sorted((out / "hl7").glob("*.hl7"))[:4]:
        msg = hl7.parse(f.read_bytes().decode("utf-8"))  # read_text would turn \r into \n
        assert str(msg.segment("MSH")[9]) == "ORU^R01^ORU_R01"
        assert str(msg.segment("PID")[3][0][0]) == f.stem
        fhir = json.loads((out / "fhir" / f"{f.stem}.json").read_text())
        n_labs = sum(1 for e in fhir["entry"] if e["resource"]["resourceType"] == "Observation"
                     and e["resource"]["category"][0]["coding"][0]["code"] == "laboratory")
        assert len(msg.segments("OBX")) == n_labs


def test_omop_tables(demo: tuple[Path, dict]) -> None:
    out, _ = demo
    m = pq.read_table(out / "omop" / "measurement.parquet").to_pandas()
    assert set(m.loc[m.measurement_source_value == "6690-2", "measurement_concept_id"]) == {3000905}
    assert set(m.loc[m.measurement_source_value == "751-8", "measurement_concept_id"]) == {3013650}
    units = dict(zip(m.unit_source_value, m.unit_concept_id, strict=True))
    assert units["10*9/L"] == 9444 and units["10*3/uL"] == 8848 and units["/uL"] == 8647
    person = pq.read_table(out / "omop" / "person.parquet").to_pandas()
    assert set(person.gender_concept_id) == {8507, 8532}
    drugs = pq.read_table(out / "omop" / "drug_exposure.parquet").to_pandas()
    assert drugs.drug_exposure_end_date.notna().all()
    assert drugs.person_id.isin(person.person_id).all()


def test_generation_speed() -> None:
    """Vectorised: far from per-row Python (the floor is generous for loaded CI machines)."""
    t0 = time.perf_counter()
    pop = generate(20000, 1)
    rows, _ = add_dirty(lab_rows(pop), 1)
    rate = len(rows) / (time.perf_counter() - t0)
    assert len(rows) > 900_000 and rate > 150_000


def test_cli_generate_and_validate_with_duckdb_screen(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "generate", "--persons", "250", "--seed", "3", "-o", str(out), "--subset", "5"]) == 0
    assert (out / "truth.parquet").exists() and len(list((out / "fhir").glob("*.json"))) >= 5
    capsys.readouterr()
    assert main(["validate", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["engine"] == "duckdb"
    stats = {f["finding"]: f for f in report["findings"]}
    for finding in EXACT:
        assert (stats[finding]["fp"], stats[finding]["fn"]) == (0, 0), finding
    assert main(["validate", str(tmp_path)]) == 2  # no truth.parquet: a clean error, exit 2


def test_scenario_truth_table_is_consistent() -> None:
    frame = pd.DataFrame([{"name": s.name, **{f: f in s.truth for f in FINDINGS}} for s in SCENARIOS])
    # every positive finding implies neutropenia except lymphocytopenia
    for f in ("chronic_neutropenia", "cyclic", "drug_associated", "pancytopenia"):
        assert (frame.loc[frame[f], "neutropenia"]).all()
