"""An Assessment as FHIR R4 resources, in a transaction Bundle a FHIR server accepts.

Resource choice (README, "Writing FHIR", explains it at more length):
- the counts of the assessed draw -> `Observation` (LOINC code, UCUM 10*9/L, referenceRange, and
  `interpretation` L / LL / H / HH / N from the v3-ObservationInterpretation code system);
- each finding (neutropenia grade 4 ...) -> an `Observation` derived from the count
  (`derivedFrom`), so any EHR lists it with the labs, and it carries the grade, rule and source;
- each alert (febrile neutropenia, chemotherapy hold ...) -> a `DetectedIssue` (an actual or
  potential clinical issue, with severity and the implicated counts), and critical alerts also a
  `Flag`, which EHRs show as a banner;
- MASCC / CISNE scores -> `RiskAssessment` (a predicted risk of a serious complication).
Every resource is built with the `fhir.resources` R4 models, so what we write is validated.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..model import Assessment, Count
from ..units import loinc_codes_for

try:
    from fhir.resources.R4B import get_fhir_model_class
except ImportError:  # pragma: no cover
    from fhir.resources import get_fhir_model_class

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
FINDING_SYSTEM = "https://leukowatch.org/fhir/CodeSystem/finding"
ALERT_SYSTEM = "https://leukowatch.org/fhir/CodeSystem/alert"
#: Our units -> UCUM codes.
_UCUM = {"10^9/L": "10*9/L", "10^12/L": "10*12/L", "g/dL": "g/dL", "%": "%"}
_INTERP_TEXT = {"L": "Low", "LL": "Critical low", "H": "High", "HH": "Critical high", "N": "Normal"}
_DETECTED_SEVERITY = {"critical": "high", "warning": "moderate", "info": "low"}
_NS = uuid.UUID("6f1c1f5e-2b7a-4c55-9d1e-6c3f0b2a7e11")


def _urn(*parts: Any) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, chr(31).join(str(p) for p in parts))}"


def _critical_analytes(a: Assessment) -> set[str]:
    """Analytes whose finding is named by a critical alert (severe_neutropenia -> neutrophils)."""
    critical = [al.code for al in a.alerts if al.level == "critical"]
    return {f.analyte for f in a.findings if any(f.code in code for code in critical)}


def interpretation(count: Count, critical: bool) -> str:
    """L / H from the count's flag; LL / HH when a critical alert is about this analyte."""
    if count.flag == "low":
        return "LL" if critical else "L"
    if count.flag == "high":
        return "HH" if critical else "H"
    return "N"


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    q: dict[str, Any] = {"value": round(value, 6), "unit": unit}
    if unit in _UCUM:
        q.update(system=UCUM, code=_UCUM[unit])
    return q


def build_resources(a: Assessment) -> list[dict[str, Any]]:
    """The resources as plain JSON dicts (validated by `bundle`)."""
    p = a.patient
    pid = (p.id if p and p.id else None) or "anonymous"
    when = (a.time.isoformat() if a.time else None)
    patient_url = _urn("Patient", pid)
    patient: dict[str, Any] = {"resourceType": "Patient", "gender": (p.sex if p and p.sex != "unknown" else "unknown")}
    if p and p.id:
        patient["identifier"] = [{"system": "urn:leukowatch:patient", "value": p.id}]
    if p and p.birth_date:
        patient["birthDate"] = p.birth_date.isoformat()
    resources: list[tuple[str, dict[str, Any]]] = [(patient_url, patient)]
    subject = {"reference": patient_url}
    critical = _critical_analytes(a)
    count_url: dict[str, str] = {}
    for analyte, c in a.counts.items():
        url = _urn("Observation", pid, when, analyte)
        count_url[analyte] = url
        codes = loinc_codes_for(analyte)
        code = {"coding": [{"system": LOINC, "code": codes[0]}], "text": analyte} if codes else {"text": analyte}
        interp = interpretation(c, analyte in critical)
        obs: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "category": [_concept(CATEGORY, "laboratory", "Laboratory")],
            "code": code, "subject": subject, "valueQuantity": _quantity(c.value, c.unit),
            "interpretation": [_concept(INTERPRETATION, interp, _INTERP_TEXT[interp])],
        }
        if c.comparator:
            obs["valueQuantity"]["comparator"] = c.comparator
        t = c.time.isoformat() if c.time else when
        if t:
            obs["effectiveDateTime"] = t
        rng = c.reference_range
        if rng and (rng.low is not None or rng.high is not None):
            r: dict[str, Any] = {"text": c.range_source} if c.range_source else {}
            if rng.low is not None:
                r["low"] = _quantity(rng.low, c.unit)
            if rng.high is not None:
                r["high"] = _quantity(rng.high, c.unit)
            obs["referenceRange"] = [r]
        if c.derivation:
            obs["note"] = [{"text": f"derived by leukowatch: {c.derivation}"}]
        resources.append((url, obs))
    for f in a.findings:
        basis = count_url.get(f.analyte)
        finding: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "category": [_concept(CATEGORY, "laboratory", "Laboratory")],
            "code": _concept(FINDING_SYSTEM, f.code, f.term or f.code),
            "subject": subject,
            "valueCodeableConcept": {"text": ", ".join(x for x in (
                f.severity, f"grade {f.grade} ({f.criteria})" if f.grade is not None else None) if x) or f.code},
            "note": [{"text": f"rule: {f.rule}"}, {"text": f"threshold: {f.threshold}"},
                     {"text": f"source: {f.source}"}, *({"text": n} for n in f.notes)],
            "method": {"text": f"leukowatch {a.knowledge_version}, profile {a.profile}"},
        }
        if when:
            finding["effectiveDateTime"] = when
        if basis:
            finding["derivedFrom"] = [{"reference": basis}]
            finding["interpretation"] = [_concept(INTERPRETATION, interpretation(a.counts[f.analyte],
                                                                                 f.analyte in critical))]
        resources.append((_urn("Finding", pid, when, f.code), finding))
    for al in a.alerts:
        implicated = [{"reference": count_url[x]} for x in ("neutrophils", "wbc") if x in count_url]
        issue: dict[str, Any] = {
            "resourceType": "DetectedIssue", "status": "final",
            "code": _concept(ALERT_SYSTEM, al.code),
            "severity": _DETECTED_SEVERITY.get(al.level, "low"),
            "patient": subject, "detail": al.message,
        }
        if when:
            issue["identifiedDateTime"] = when
        if implicated:
            issue["implicated"] = implicated
        if al.source:
            issue["reference"] = al.source if al.source.startswith("http") else None
            if issue["reference"] is None:
                issue.pop("reference")
        resources.append((_urn("DetectedIssue", pid, when, al.code), issue))
        if al.level == "critical":
            flag: dict[str, Any] = {
                "resourceType": "Flag", "status": "active",
                "category": [_concept("http://terminology.hl7.org/CodeSystem/flag-category", "clinical", "Clinical")],
                "code": {"coding": [{"system": ALERT_SYSTEM, "code": al.code}], "text": al.message},
                "subject": subject,
            }
            if when:
                flag["period"] = {"start": when}
            resources.append((_urn("Flag", pid, when, al.code), flag))
    for s in a.scores:
        risk: dict[str, Any] = {
            "resourceType": "RiskAssessment", "status": "final" if s.complete else "preliminary",
            "subject": subject, "method": {"text": s.name},
            "prediction": [{"outcome": {"text": "serious medical complication of febrile neutropenia"},
                            "qualitativeRisk": {"text": s.risk or "undetermined"},
                            "rationale": f"{s.name} {s.points}/{s.max_points}: {s.interpretation}"}],
            "note": [{"text": f"source: {s.source}"}],
        }
        if when:
            risk["occurrenceDateTime"] = when
        if "neutrophils" in count_url:
            risk["basis"] = [{"reference": count_url["neutrophils"]}]
        resources.append((_urn("RiskAssessment", pid, when, s.name), risk))
    return [{"fullUrl": url, "resource": res} for url, res in resources]


def bundle(a: Assessment) -> Any:
    """A validated FHIR R4 transaction Bundle (a `fhir.resources` model)."""
    entries = build_resources(a)
    for e in entries:
        e["request"] = {"method": "POST", "url": e["resource"]["resourceType"]}
    data = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return get_fhir_model_class("Bundle").model_validate(data)


def bundle_json(a: Assessment, request: Any = None, indent: int | None = 2) -> str:
    """What `leukowatch assess FILE --fhir` prints. `request` is accepted for symmetry and unused:
    everything written comes from the Assessment itself."""
    import json

    model = bundle(a)
    return json.dumps(json.loads(model.model_dump_json(exclude_none=True)), indent=indent, ensure_ascii=False)
