"""FHIR R4 reader: public examples (shared/samples) and our own mixed bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leukowatch.assess import assess
from leukowatch.io import read_path, read_text, request_from_text
from leukowatch.model import InputError

DATA = Path(__file__).parent / "data"


def _one(result, analyte, percent=False):
    (obs,) = [o for o in result.observations if o.analyte == analyte and o.percent == percent]
    return obs


def test_diagnosticreport_101_takes_time_from_the_report(samples_dir):
    r = read_path(samples_dir / "fhir_hl7core_diagnosticreport-example-101_cbc_bundle.json")
    assert r.reconciles()
    anc = _one(r, "neutrophils")
    assert anc.value == pytest.approx(0.9) and anc.lab_flag == "LL"  # unit "x10*9/L", code "10*9/L"
    assert anc.time.isoformat() == "2011-03-04T08:30:00+11:00"
    assert anc.patient_id == "pat2"
    assert _one(r, "basophils").reference_range.high == pytest.approx(0.21)
    a = assess(request_from_text((samples_dir / "fhir_hl7core_diagnosticreport-example-101_cbc_bundle.json")
                                 .read_text(), "fhir", "101"))
    # neutropenia without leukopenia; the reported absolute count wins over 20 % x 4.6
    assert a.finding("neutropenia") and not a.finding("leukopenia")
    assert a.counts["neutrophils"].value == pytest.approx(0.9)


def test_msconverter_bundle_cells_per_ul_vs_thousands(samples_dir):
    r = read_path(samples_dir / "fhir_msconverter_LRI_CBC_expected_bundle.json")
    assert _one(r, "wbc").value == pytest.approx(105.6)
    assert _one(r, "neutrophils").value == pytest.approx(58)
    assert _one(r, "wbc").reference_range.low == pytest.approx(4.3)  # from referenceRange.text
    assert r.patients[0].birth_date.isoformat() == "1961-06-15"


def test_synthea_transaction_bundle_two_cbcs(samples_dir):
    r = read_path(samples_dir / "fhir_synthea_r4_bundle_Stanley_Balistreri.json")
    wbcs = sorted((o for o in r.observations if o.analyte == "wbc"), key=lambda o: o.time)
    assert [w.value for w in wbcs] == [5.1254632696517035, 3.8432834741813267]
    assert wbcs[0].patient_id == r.patients[0].id  # urn:uuid subject resolved
    a = assess(request_from_text((samples_dir / "fhir_synthea_r4_bundle_Stanley_Balistreri.json").read_text(),
                                 "fhir", "synthea"))
    assert a.finding("leukopenia")  # the latest CBC, at age 28


def test_us_core_single_observations(samples_dir):
    wbc = read_path(samples_dir / "fhir_uscore_observation-cbc-leukocytes.json")
    assert _one(wbc, "wbc").value == 10 and _one(wbc, "wbc").reference_range.low == pytest.approx(4.5)
    neut = read_path(samples_dir / "fhir_uscore_observation-neutrophils.json")
    assert _one(neut, "neutrophils", percent=True).value == 40  # unit "%" without a UCUM code
    a = assess(request_from_text((samples_dir / "fhir_uscore_observation-neutrophils.json").read_text(),
                                 "fhir", "neut"))
    assert not a.findings  # insufficient data, not "normal"
    assert any("without a WBC" in w for w in a.warnings)


def test_mixed_bundle_components_comparators_status_and_context():
    r = read_path(DATA / "io_bundle_mixed.json")
    assert (r.read, r.accepted, r.rejected) == (8, 5, 3)
    assert _one(r, "wbc").value == pytest.approx(2.6)  # {cells}/uL
    assert _one(r, "wbc").time.isoformat() == "2026-03-02T07:45:00+01:00"  # from the report
    assert _one(r, "neutrophils", percent=True).value == 30  # contained in the report
    anc = _one(r, "neutrophils")
    assert anc.comparator == "<"
    assert _one(r, "lymphocytes").value == pytest.approx(0.9)  # a component
    kinds = {x.locator: x.kind for x in r.rejects}
    assert kinds == {"entry[4].resource.status": "skipped",
                     "entry[5].resource.component[2].valueQuantity.unit": "invalid",
                     "entry[6].resource.code": "skipped"}
    assert [m.name for _, m in r.medications] == ["methimazole 10 mg", "cyclophosphamide"]
    assert r.medications[0][1].start.isoformat() == "2026-01-15"
    assert r.conditions == [("p-fhir-1", "Systemic lupus erythematosus")]
    assert r.patients[0].sex == "female"


def test_assess_a_bundle_with_medicines_and_conditions():
    data = json.loads((DATA / "io_bundle_mixed.json").read_text())
    data["entry"][5]["resource"]["component"].pop()  # drop the unit-less eosinophils
    request = request_from_text(json.dumps(data), "fhir", "mixed")
    assert request["patient"] == {"id": "p-fhir-1", "sex": "female", "birth_date": "1961-05-20"}
    a = assess(request)
    assert a.finding("neutropenia") and a.finding("leukopenia")
    assert {m.generic for m in a.possible_causes["medications"]} >= {"methimazole"}


@pytest.mark.parametrize("text, field", [
    ('{"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": "abc"}}',
     "$.valueQuantity.value"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", '
     '"gender": 5}}]}', "entry[0].resource.gender"),
    ('{"resourceType": "Spaceship"}', "$.resourceType"),
    ("[1, 2]", "$"),
    ('{"resourceType": "Observation",', "x.json"),
])
def test_malformed_fhir_names_the_json_path(text, field):
    with pytest.raises(InputError) as err:
        read_text(text, "fhir", "x.json")
    assert err.value.field == field


def test_one_bad_observation_in_a_bundle_is_a_reject_not_a_failure():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "WBC"},
                      "valueQuantity": {"value": "lots", "unit": "10*9/L"}}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "WBC"},
                      "valueQuantity": {"value": 3.3, "unit": "10*9/L"}}}]}
    r = read_text(json.dumps(bundle), "fhir", "b")
    assert (r.read, r.accepted, r.rejected) == (2, 1, 1)
    assert r.rejects[0].locator == "entry[0].resource.valueQuantity.value"
