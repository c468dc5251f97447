"""observations + context -> Assessment: the one function every entry point calls.

The order mirrors how a clinician reads a CBC: counts and their ranges, what is low and how badly,
is it an emergency, is it new or long-standing, what may explain it, what to do. Each step is a
pure rule in `rules/`; this module only wires them and adds the plain-language summaries.
"""

from __future__ import annotations

from typing import Any

from .knowledge import knowledge_version, load_table
from .model import Advice, Alert, Assessment, Chronicity, Finding, Request
from .narrative import DISCLAIMER, clinician_lines, patient_lines, verdict_line
from .request import parse_request
from .rules.causes import match_conditions, match_medications, match_symptoms
from .rules.chronic import LowResult, chronicity, group_draws
from .rules.counts import Draw, evaluate_draw
from .rules.findings import LOW_FINDING
from .rules.findings import findings_from_counts as _findings
from .rules.grading import check_criteria, criteria_label
from .rules.infection import cisne, febrile_neutropenia, mascc, severe_neutropenia
from .rules.ranges import profile_for
from .rules.treatment import chemotherapy_hold, drug_monitoring

#: Which low analyte the chronicity verdict speaks about, in order of clinical weight (the article
#: defines chronic *neutropenia*; leukopenia and lymphocytopenia follow).
_CHRONICITY_ORDER: tuple[str, ...] = ("neutrophils", "wbc", "lymphocytes")


def evaluate_history(request: Request, profile: str) -> list[Draw]:
    """Every draw in the request, oldest first, each flagged against this person's ranges."""
    return [evaluate_draw(obs, request.patient, profile, t) for t, obs in group_draws(request.observations)]


def chronicity_from_draws(draws: list[Draw]) -> Chronicity:
    current = draws[-1].counts
    low_now = [a for a in _CHRONICITY_ORDER if a in current and current[a].flag == "low"]
    measured = [a for a in _CHRONICITY_ORDER if any(a in d.counts for d in draws)]
    if not measured:
        return Chronicity("undetermined", None, ["no white-cell counts"])
    had_lows = [a for a in measured if any(a in d.counts and d.counts[a].flag == "low" for d in draws)]
    analyte = (low_now or had_lows or measured)[0]
    series = [d for d in draws if analyte in d.counts]
    lows = [LowResult(d.time, d.counts[analyte].value) for d in series
            if d.time is not None and d.counts[analyte].flag == "low"]
    return chronicity(analyte, lows, len(series), bool(low_now))


def _patient_warnings(request: Request) -> list[str]:
    warnings = []
    if request.patient.sex == "unknown":
        warnings.append("sex not given: the wider (female) WBC range and the lower anemia threshold are used")
    if request.patient.age_years is None and request.patient.birth_date is None:
        warnings.append("age not given: adult ranges are used")
    return warnings


def _advice_keys(request: Request, findings: list[Finding], alerts: list[Alert],
                 meds: list[Any], conditions: list[Any], symptoms: list[Any]) -> set[str]:
    codes = {f.code for f in findings}
    keys = {"always"}
    if codes & set(LOW_FINDING.values()) - {"anemia", "thrombocytopenia"}:
        keys.add("low_wbc")
    if "neutropenia" in codes:
        keys.add("neutropenia")
    if symptoms:
        keys.add("infection_symptoms")
    fever_words = {label for _, label in symptoms if "fever" in label.lower()}
    fn_rule = load_table("infection")["febrile_neutropenia"]
    if fever_words or (request.temperature_c is not None and request.temperature_c >= fn_rule["sustained_temp_c"]):
        keys.add("fever")
    if request.chemotherapy.active or any(m.chemotherapy for m in meds):
        keys.add("chemotherapy")
    if request.recurrent_infections:
        keys.add("recurrent_infections")
    if meds:
        keys.add("medication_cause")
    if any(c.category == "inherited" for c in conditions):
        keys.add("genetic_cause")
    if any(a.code == "febrile_neutropenia" for a in alerts):
        keys.add("febrile_neutropenia")
    return keys


def _select_advice(keys: set[str], low: bool) -> dict[str, list[str]]:
    table = load_table("advice")
    out: dict[str, list[str]] = {}
    for section in ("treatment", "home_care", "contact_doctor"):
        entries = table.get(section, [])
        out[section] = [e["text"] for e in entries
                        if e["when"] in keys and (low or e["when"] != "always" or section == "contact_doctor")]
    return out


def prepare(request: Request | dict[str, Any]) -> tuple[Request, str, str, list[Draw]]:
    """Validate a request and judge every draw in it: the start shared by `assess` and `history`,
    so both see the same profile, criteria and flagged draws."""
    if not isinstance(request, Request):
        request = parse_request(request)
    profile = profile_for(request.profile, request.patient.duffy_null)
    criteria = check_criteria(request.criteria)
    return request, profile, criteria, evaluate_history(request, profile)


def assess(request: Request | dict[str, Any]) -> Assessment:
    """Assess one person's blood count (the JSON request of DESIGN.md, or a parsed Request)."""
    request, profile, criteria, draws = prepare(request)
    current = draws[-1]
    counts = current.counts
    findings = _findings(counts, criteria)
    warnings = current.warnings + _patient_warnings(request)

    anc = counts["neutrophils"].value if "neutrophils" in counts else None
    alerts: list[Alert] = []
    fn_alert, fn_note = febrile_neutropenia(anc, request.temperature_c, request.fever_sustained_1h,
                                            request.anc_expected_to_fall)
    neutropenia = next((f for f in findings if f.code == "neutropenia"), None)
    if fn_alert:
        alerts.append(fn_alert)
    if fn_note and neutropenia is not None:
        neutropenia.notes.append(fn_note)
    if (severe := severe_neutropenia(anc)) is not None:
        alerts.append(severe)

    symptoms = match_symptoms(request.symptoms)
    low_white = any(f.code in ("leukopenia", "neutropenia") for f in findings)
    if symptoms:
        labels = ", ".join(label for _, label in symptoms)
        alerts.append(Alert(
            code="infection_symptoms", level="warning" if low_white else "info",
            message=(f"Signs of infection reported ({labels})"
                     + (" with a low white-cell count: contact a doctor today." if low_white else ".")),
            rule="any infection symptom the article lists",
            source="Article: symptoms of infection (fever, sweating, chills, toothache, sore throat, mouth "
                   "ulcers, tiredness, flu-like symptoms, rash)",
        ))

    meds = match_medications(request.medications)
    if (hold := chemotherapy_hold(request.chemotherapy, counts)) is not None:
        alerts.append(hold)
    alerts.extend(drug_monitoring(meds, anc, request.patient.duffy_null or profile == "duffy_null"))

    chron = chronicity_from_draws(draws)
    if chron.status == "chronic" and chron.analyte == "neutrophils":
        alerts.append(Alert(
            code="chronic_neutropenia", level="warning",
            message="Chronic neutropenia: " + chron.evidence[0] + ". Consider haematology review of the cause.",
            rule=chron.evidence[1] if len(chron.evidence) > 1 else "", source=load_table("timeline")["chronic"]["source"],
        ))
    if request.recurrent_infections:
        alerts.append(Alert(
            code="recurrent_infections", level="warning",
            message="Recurrent infections reported: the article advises contacting a doctor; check the "
                    "white-cell count and its differential.",
            rule="recurrent infections reported", source="Article: contact a doctor for recurrent infections",
        ))

    scores = []
    if fn_alert is not None or request.mascc:
        age = request.patient.age_at(current.time)
        scores.append(mascc(request.mascc, age))
    if fn_alert is not None or request.cisne:
        monocytes = counts["monocytes"].value if "monocytes" in counts else None
        scores.append(cisne(request.cisne, monocytes))

    conditions = match_conditions(request.conditions)
    matched_inputs = {m.input for m in meds}
    possible_causes: dict[str, list[Any]] = {
        "medications": meds,
        "conditions": conditions,
        "unlinked_medications": [m.name for m in request.medications if m.name not in matched_inputs],
    }
    low = any(f.code in LOW_FINDING.values() or f.code == "pancytopenia" for f in findings)
    advice_lists = _select_advice(_advice_keys(request, findings, alerts, meds, conditions, symptoms), low)
    assessment = Assessment(
        counts=counts, findings=findings, alerts=alerts, chronicity=chron, possible_causes=possible_causes,
        advice=Advice(**advice_lists), profile=profile, criteria=criteria_label(criteria),
        knowledge_version=knowledge_version(), disclaimer=DISCLAIMER, scores=scores, warnings=warnings,
        patient=request.patient, time=current.time,
    )
    assessment.verdict = verdict_line(assessment)
    assessment.patient_summary = patient_lines(assessment)
    assessment.clinician_summary = clinician_lines(assessment)
    return assessment
