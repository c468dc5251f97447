"""FHIR writer: read -> assess -> write -> validate with the model library -> read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle

from leukowatch.assess import assess
from leukowatch.cli import main
from leukowatch.io import read_text, request_from_text
from leukowatch.render.fhir import bundle, bundle_json

DATA = Path(__file__).parent / "data"
EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "leukowatch" / "examples" / "febrile-neutropenia.json"


def _resources(text: str, rtype: str) -> list[dict]:
    return [e["resource"] for e in json.loads(text)["entry"] if e["resource"]["resourceType"] == rtype]


def test_round_trip_hl7_to_fhir_validates_and_reads_back():
    request = request_from_text((DATA / "io_oru_mllp.hl7").read_text(), "hl7", "mllp")
    a = assess(request)
    text = bundle_json(a)
    Bundle.model_validate_json(text)  # the model library accepts what we wrote
    back = read_text(text, "fhir", "out")
    assert back.reconciles()
    wbc = [o for o in back.observations if o.analyte == "wbc"]
    assert wbc[0].value == pytest.approx(3.1) and wbc[0].lab_flag == "L"
    assert wbc[0].reference_range.low == pytest.approx(4.0)


def test_interpretations_findings_and_alerts():
    a = assess(json.loads(EXAMPLE.read_text()))
    model = bundle(a)
    assert model.type == "transaction"
    text = bundle_json(a)
    observations = _resources(text, "Observation")
    interp = {o["code"]["text"]: o["interpretation"][0]["coding"][0]["code"] for o in observations
              if o["code"]["coding"][0]["system"] == "http://loinc.org"}
    assert interp["wbc"] == "L"
    assert interp["neutrophils"] == "LL"  # a critical alert (febrile neutropenia) names neutropenia
    assert interp["lymphocytes"] == "N"
    findings = [o for o in observations if o.get("derivedFrom")]
    assert {f["code"]["coding"][0]["code"] for f in findings} >= {"leukopenia", "neutropenia"}
    issues = _resources(text, "DetectedIssue")
    assert any(i["code"]["coding"][0]["code"] == "febrile_neutropenia" and i["severity"] == "high" for i in issues)
    assert _resources(text, "Flag")  # critical alerts also as a Flag


def test_round_trip_public_sample(samples_dir):
    text = (samples_dir / "fhir_hl7core_diagnosticreport-example-101_cbc_bundle.json").read_text()
    out = bundle_json(assess(request_from_text(text, "fhir", "101")))
    Bundle.model_validate_json(out)
    anc = [o for o in read_text(out, "fhir", "out").observations if o.analyte == "neutrophils"]
    assert anc[0].value == pytest.approx(0.9) and anc[0].lab_flag in ("L", "LL")


def test_cli_assess_fhir_flag(capsys):
    assert main(["assess", str(DATA / "io_oru_mllp.hl7"), "--fhir"]) == 0
    Bundle.model_validate_json(capsys.readouterr().out)
