"""observations + context -> Assessment: the one function every entry point calls.

The order mirrors how a clinician reads a CBC: counts and their ranges, what is low and how badly,
is it an emergency, is it new or long-standing, what may explain it, what to do. Each step is a
pure rule in `rules/`; this module only wires them and adds the plain-language summaries.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from .knowledge import knowledge_version, load_table
from .model import Advice, Alert, Assessment, Chronicity, Count, Request
from .narrative import DISCLAIMER, clinician_lines, patient_lines, verdict_line
from .request import parse_request
from .rules.causes import match_conditions, match_medications, match_symptoms
from .rules.chronic import LowResult, chronicity, group_draws
from .rules.counts import Draw, evaluate_draw
from .rules.findings import LOW_FINDING
from .rules.findings import findings_from_counts as _findings
from .rules.grading import check_criteria, criteria_for_age, criteria_label
from .rules.infection import cisne, febrile_neutropenia, mascc, severe_neutropenia
from .rules.ranges import profile_for
from .rules.treatment import chemotherapy_hold, drug_monitoring

#: Which low analyte the chronicity verdict speaks about, in order of clinical weight (the article
#: defines chronic *neutropenia*; leukopenia and lymphocytopenia follow).
_CHRONICITY_ORDER: tuple[str, ...] = ("neutrophils", "wbc", "lymphocytes")


def evaluate_history(request: Request, profile: str) -> list[Draw]:
    """Every draw in the request, oldest first, each flagged against this person's ranges."""
    return [evaluate_draw(obs, request.patient, profile, t) for t, obs in group_draws(request.observations)]


def _first_low(counts: dict[str, Count], analytes: list[str] | tuple[str, ...]) -> str | None:
    for analyte in analytes:
        count = counts.get(analyte)
        if count is not None and count.flag == "low":
            return analyte
    return None


def chronicity_from_draws(draws: list[Draw]) -> Chronicity:
    # The analyte spoken about: the first low now, else the first low at any draw, else the first measured.
    analyte = _first_low(draws[-1].counts, _CHRONICITY_ORDER)
    low_now = analyte is not None
    if analyte is None:
        measured = [a for a in _CHRONICITY_ORDER if any(a in d.counts for d in draws)]
        if not measured:
            return Chronicity("undetermined", None, ["no white-cell counts"])
        analyte = next((a for a in measured if any(_first_low(d.counts, (a,)) for d in draws)), measured[0])
    series = [d for d in draws if analyte in d.counts]
    lows = [LowResult(d.time, d.counts[analyte].value) for d in series
            if d.time is not None and d.counts[analyte].flag == "low"]
    return chronicity(analyte, lows, len(series), low_now)


def _patient_warnings(request: Request) -> list[str]:
    warnings = []
    if request.patient.sex == "unknown":
        warnings.append("sex not given: the wider (female) WBC range and the lower anemia threshold are used")
    if request.patient.age_years is None and request.patient.birth_date is None:
        warnings.append("age not given: adult ranges are used")
    return warnings


#: Findings that make a count "low white cells" for the advice (anemia and low platelets do not).
_LOW_WHITE_FINDINGS = frozenset(LOW_FINDING.values()) - {"anemia", "thrombocytopenia"}
#: Findings that make any count low (the advice then includes the general "always" entries).
_LOW_FINDINGS = frozenset(LOW_FINDING.values()) | {"pancytopenia"}
_ADVICE_SECTIONS = ("treatment", "home_care", "contact_doctor")  # Advice's fields, in order


def _advice_keys(request: Request, codes: set[str], alerts: list[Alert],
                 meds: list[Any], conditions: list[Any], symptoms: list[Any]) -> frozenset[str]:
    """Which advice.toml `when` conditions hold; `codes` are the finding codes."""
    keys = {"always"}
    if not _LOW_WHITE_FINDINGS.isdisjoint(codes):
        keys.add("low_wbc")
    if "neutropenia" in codes:
        keys.add("neutropenia")
    if symptoms:
        keys.add("infection_symptoms")
    temperature = request.temperature_c
    if (any(["fever" in label.lower() for _, label in symptoms])
            or (temperature is not None and temperature >= _fever_temp_c())):
        keys.add("fever")
    if request.chemotherapy.active or any([m.chemotherapy for m in meds]):
        keys.add("chemotherapy")
    if request.recurrent_infections:
        keys.add("recurrent_infections")
    if meds:
        keys.add("medication_cause")
    if any([c.category == "inherited" for c in conditions]):
        keys.add("genetic_cause")
    if any([a.code == "febrile_neutropenia" for a in alerts]):
        keys.add("febrile_neutropenia")
    return frozenset(keys)


@cache
def _fever_temp_c() -> float:
    """A temperature this high counts as a fever for the advice (the sustained febrile-neutropenia one)."""
    return load_table("infection")["febrile_neutropenia"]["sustained_temp_c"]


@lru_cache(maxsize=1024)
def _advice_texts(keys: frozenset[str], low: bool) -> tuple[tuple[str, ...], ...]:
    """The advice per section for one set of keys: a few dozen combinations occur, each worked out once."""
    table = load_table("advice")
    return tuple(
        tuple(e["text"] for e in table.get(section, [])
              if e["when"] in keys and (low or e["when"] != "always" or section == "contact_doctor"))
        for section in _ADVICE_SECTIONS
    )


def _select_advice(keys: frozenset[str], low: bool) -> Advice:
    treatment, home_care, contact_doctor = _advice_texts(keys, low)
    return Advice(list(treatment), list(home_care), list(contact_doctor))


def prepare(request: Request | dict[str, Any]) -> tuple[Request, str, str, list[Draw]]:
    """Validate a request and judge every draw in it: the start shared by `assess` and `history`,
    so both see the same profile, criteria and flagged draws."""
    if not isinstance(request, Request):
        request = parse_request(request)
    profile = profile_for(request.profile, request.patient.duffy_null)
    criteria = check_criteria(request.criteria)
    draws = evaluate_history(request, profile)
    # an age-banded version (DAIDS) becomes a key naming the age at the latest result (rules.grading)
    criteria = criteria_for_age(criteria, request.patient.birth_date, request.patient.age_years, draws[-1].time)
    return request, profile, criteria, draws


def assess(request: Request | dict[str, Any]) -> Assessment:
    """Assess one person's blood count (the JSON request of DESIGN.md, or a parsed Request)."""
    request, profile, criteria, draws = prepare(request)
    current = draws[-1]
    counts = current.counts
    findings = _findings(counts, criteria)
    codes = {f.code for f in findings}
    warnings = current.warnings + _patient_warnings(request)

    anc = counts["neutrophils"].value if "neutrophils" in counts else None
    alerts: list[Alert] = []
    fn_alert, fn_note = febrile_neutropenia(anc, request.temperature_c, request.fever_sustained_1h,
                                            request.anc_expected_to_fall)
    if fn_alert:
        alerts.append(fn_alert)
    if fn_note and "neutropenia" in codes:
        next(f for f in findings if f.code == "neutropenia").notes.append(fn_note)
    if (severe := severe_neutropenia(anc)) is not None:
        alerts.append(severe)

    symptoms = match_symptoms(request.symptoms)
    low_white = "leukopenia" in codes or "neutropenia" in codes
    if symptoms:
        labels = ", ".join([label for _, label in symptoms])
        alerts.append(Alert(  # code, level, message, rule, source
            "infection_symptoms", "warning" if low_white else "info",
            (f"Signs of infection reported ({labels})"
             + (" with a low white-cell count: contact a doctor today." if low_white else ".")),
            "any infection symptom the article lists",
            "Article: symptoms of infection (fever, sweating, chills, toothache, sore throat, mouth "
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
    low = not _LOW_FINDINGS.isdisjoint(codes)
    advice = _select_advice(_advice_keys(request, codes, alerts, meds, conditions, symptoms), low)
    assessment = Assessment(  # the required fields positionally, in their order: keywords cost twice as much
        counts, findings, alerts, chron, possible_causes, advice, profile, criteria_label(criteria),
        knowledge_version(), DISCLAIMER, scores=scores, warnings=warnings, patient=request.patient, time=current.time,
    )
    assessment.verdict = verdict_line(assessment)
    assessment.patient_summary = patient_lines(assessment)
    assessment.clinician_summary = clinician_lines(assessment)
    return assessment
