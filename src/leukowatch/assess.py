"""observations + context -> Assessment: the one function every entry point calls.

The order mirrors how a clinician reads a CBC: counts and their ranges, what is low and how badly,
is it an emergency, is it new or long-standing, what may explain it, what to do. Each step is a
pure rule in `rules/`; this module only wires them and adds the plain-language summaries.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, NamedTuple

from . import vocabulary
from .knowledge import Knowledge, active, derived, load_table, use
from .model import Advice, Alert, Assessment, Chronicity, Count, MedicationMatch, Request
from .narrative import DISCLAIMER, clinician_lines, patient_lines, verdict_line
from .request import in_the_future, parse_request
from .rules.alerts import make_alert
from .rules.causes import (
    SymptomMatch,
    match_conditions,
    match_medications,
    match_symptoms,
    split_current,
    taking_at,
)
from .rules.chronic import LowResult, chronicity, group_draws
from .rules.counts import Draw, evaluate_draw
from .rules.escalation import (
    anc_expected_to_fall,
    drug_agranulocytosis,
    hyperleukocytosis,
    severe_neutropenia,
    without_differential,
)
from .rules.findings import below_range_codes
from .rules.findings import findings_from_counts as _findings
from .rules.grading import check_criteria, criteria_for_age, criteria_label
from .rules.infection import cisne, febrile_neutropenia, mascc
from .rules.ranges import adult_age, profile_for
from .rules.treatment import chemotherapy_hold, drug_monitoring
from .units import celsius_text

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


def _patient_warnings(request: Request, profile: str, when: datetime | None) -> list[str]:
    warnings = []
    if request.patient.sex == "unknown":
        warnings.append(load_table("profiles")["warnings"]["sex_unknown"])
    if when is not None and in_the_future(when):
        warnings.append(f"the latest result is dated {when.isoformat()}, in the future: check its date (it is read "
                        "as the latest result here; a store refuses it)")
    age = request.patient.age_at(when)
    if age is None:
        warnings.append(load_table("profiles")["warnings"]["age_unknown"])
    elif profile == "duffy_null" and age < adult_age():
        warnings.append(load_table("profiles")["warnings"]["duffy_null_child"])
    return warnings


_ADVICE_SECTIONS = ("treatment", "home_care", "contact_doctor")  # Advice's fields, in order


def _advice_keys(request: Request, codes: set[str], alerts: list[Alert], meds: list[Any],
                 conditions: list[Any], symptoms: list[Any], febrile: bool, on_chemotherapy: bool,
                 child: bool) -> frozenset[str]:
    """Which advice.toml conditions hold; `codes` are the finding codes."""
    keys = {"always"}
    low_white = not vocabulary.low_white().isdisjoint(codes)  # eosinopenia, basopenia: informational
    if low_white:
        keys.add("low_wbc")
    if "neutropenia" in codes:
        keys.add("neutropenia")
    if symptoms:
        keys.add("infection_symptoms")
    if febrile:
        keys.add("fever")
    if on_chemotherapy:
        keys.add("chemotherapy")
    if request.recurrent_infections:
        keys.add("recurrent_infections")
    if meds and low_white:
        keys.add("medication_cause")
    if low_white and any([c.category == "inherited" for c in conditions]):
        keys.add("genetic_cause")
    for alert in alerts:
        if alert.code in ("febrile_neutropenia", "severe_neutropenia"):
            keys.add(alert.code)
    if child:
        keys.add("child")
    return frozenset(keys)


@derived
def _fever_temp_c() -> float:
    """A temperature this high counts as a fever (the febrile-neutropenia sustained limit, 38.0 °C)."""
    return load_table("infection")["febrile_neutropenia"]["sustained_temp_c"]


@derived
def _advice_rows() -> dict[str, tuple[tuple[str, frozenset[str], frozenset[str]], ...]]:
    """Per section: (text, conditions that must all hold, conditions that hide it), in table order."""
    table = load_table("advice")
    return {section: tuple((e["text"], frozenset(_as_list(e["when"])), frozenset(_as_list(e.get("unless", []))))
                           for e in table.get(section, []))
            for section in _ADVICE_SECTIONS}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@derived(maxsize=1024)
def _advice_texts(keys: frozenset[str], low: bool) -> tuple[tuple[str, ...], ...]:
    """The advice per section for one set of keys: a few dozen combinations occur, each worked out once.
    An "always" entry shows only with a low count (or in contact_doctor)."""
    rows = _advice_rows()
    return tuple(
        tuple(text for text, when, unless in rows[section]
              if when <= keys and unless.isdisjoint(keys)
              and (low or "always" not in when or section == "contact_doctor"))
        for section in _ADVICE_SECTIONS
    )


def _select_advice(keys: frozenset[str], low: bool) -> Advice:
    treatment, home_care, contact_doctor = _advice_texts(keys, low)
    return Advice(list(treatment), list(home_care), list(contact_doctor))


class Prepared(NamedTuple):
    """A validated request with every draw judged: what `assess` and `history` both start from."""

    request: Request
    profile: str
    criteria: str  # a criteria key (rules.grading: an age-banded version names the age)
    draws: list[Draw]


def prepare(request: Request | dict[str, Any], knowledge: Knowledge | None = None) -> Prepared:
    """Validate a request and judge every draw in it: the start shared by `assess` and `history`,
    so both see the same profile, criteria and flagged draws (with `knowledge`, else the active one)."""
    if knowledge is not None:
        use(knowledge)
    if not isinstance(request, Request):
        request = parse_request(request)
    profile = profile_for(request.profile, request.patient.duffy_null)
    criteria = check_criteria(request.criteria)
    draws = evaluate_history(request, profile)
    # an age-banded version (DAIDS) becomes a key naming the age at the latest result (rules.grading)
    criteria = criteria_for_age(criteria, request.patient.birth_date, request.patient.age_years, draws[-1].time)
    return Prepared(request, profile, criteria, draws)


def _alerts(request: Request, counts: dict[str, Count], codes: set[str], meds: list[MedicationMatch],
            symptoms: list[SymptomMatch], profile: str, on_chemotherapy: bool, fever_reported: bool,
            febrile: bool, result_day: date | None) -> tuple[list[Alert], Alert | None, str | None]:
    """Every alert the current draw raises, most urgent first (the rows of knowledge/alerts.toml), with
    the febrile-neutropenia alert and, when it did not fire, the note saying what would make it."""
    anc_count = counts.get("neutrophils")
    anc = anc_count.value if anc_count is not None else None
    anc_comparator = anc_count.comparator if anc_count is not None else None
    alerts: list[Alert] = []
    falling = request.anc_expected_to_fall or anc_expected_to_fall(request.chemotherapy, result_day)
    fn_alert, fn_note = febrile_neutropenia(anc, request.temperature_c, request.fever_sustained_1h,
                                            falling, fever_reported=fever_reported,
                                            chemotherapy=on_chemotherapy, anc_comparator=anc_comparator)
    if (no_diff := without_differential(counts.get("wbc"), anc_count, febrile, on_chemotherapy)):
        if no_diff.code == "febrile_neutropenia":
            fn_alert, fn_note = no_diff, None
        else:
            alerts.append(no_diff)
    if fn_alert:
        alerts.insert(0, fn_alert)
    if (severe := severe_neutropenia(anc_count, on_chemotherapy)) is not None:
        alerts.append(severe)
    if (high := hyperleukocytosis(counts.get("wbc"))) is not None:
        alerts.append(high)
    alerts.extend(drug_agranulocytosis(anc_count, meds, febrile))
    signs = [s.label for s in symptoms]
    low_white = "leukopenia" in codes or "neutropenia" in codes
    if low_white and febrile and not fever_reported and fn_alert is None and request.temperature_c is not None:
        # a measured fever is the first of the article's signs of infection: with a low count that is no
        # febrile neutropenia (an ANC of 0.5 or more, not said to be falling) it still needs a doctor today
        signs.insert(0, f"fever {celsius_text(request.temperature_c)}")
    if signs:
        alerts.append(make_alert("infection_symptoms", "low_count" if low_white else "normal_count",
                                 symptoms=", ".join(signs)))
    if (hold := chemotherapy_hold(request.chemotherapy, counts)) is not None:
        alerts.append(hold)
    taking = [m for m in meds if taking_at(m, result_day)]
    alerts.extend(drug_monitoring(taking, anc, request.patient.duffy_null or profile == "duffy_null", anc_comparator))
    return alerts, fn_alert, fn_note


def assess(request: Request | dict[str, Any], knowledge: Knowledge | None = None) -> Assessment:
    """Assess one person's blood count (the JSON request of docs/contracts.md, or a parsed Request) with
    `knowledge` (default: the bundled tables plus the overlay LEUKOWATCH_KNOWLEDGE names)."""
    k = use(knowledge) if knowledge is not None else active()
    request, profile, criteria, draws = prepare(request)
    current = draws[-1]
    counts = current.counts
    findings = _findings(counts, criteria)
    codes = below_range_codes(findings, counts)  # a DAIDS grade within the range is no low count to alerts or advice
    warnings = request.notes + current.warnings + _patient_warnings(request, profile, current.time)
    result_day = current.time.date() if current.time is not None else None  # None: today, looked up if needed

    all_meds = match_medications(request.medications)
    meds, not_current = split_current(all_meds, result_day)
    on_chemotherapy = request.chemotherapy.active or any([m.chemotherapy and not m.dual_use for m in meds])
    symptoms = match_symptoms(request.symptoms)
    fever_reported = any([s.label == "fever" for s in symptoms])
    febrile = fever_reported or (request.temperature_c is not None and request.temperature_c >= _fever_temp_c())

    alerts, fn_alert, fn_note = _alerts(request, counts, codes, meds, symptoms, profile, on_chemotherapy,
                                        fever_reported, febrile, result_day)
    if fn_note and "neutropenia" in codes:
        next(f for f in findings if f.code == "neutropenia").notes.append(fn_note)

    chron = chronicity_from_draws(draws)
    if chron.status == "chronic" and chron.analyte == "neutrophils":
        alert = make_alert("chronic_neutropenia", "default", evidence=chron.evidence[0])
        alert.rule = chron.evidence[1] if len(chron.evidence) > 1 else alert.rule
        alerts.append(alert)
    if request.recurrent_infections:
        alerts.append(make_alert("recurrent_infections", "default"))

    age = request.patient.age_at(current.time)
    scores = []
    if fn_alert is not None or request.mascc:
        scores.append(mascc(request.mascc, age))
    if fn_alert is not None or request.cisne:
        monocytes = counts["monocytes"].value if "monocytes" in counts else None
        scores.append(cisne(request.cisne, monocytes))

    conditions = match_conditions(request.conditions)
    matched_inputs = {m.input for m in all_meds}
    possible_causes: dict[str, list[Any]] = {
        "medications": meds,
        "conditions": conditions,
        "unlinked_medications": [m.name for m in request.medications if m.name not in matched_inputs],
        "not_current_medications": not_current,
    }
    low = not vocabulary.low_any().isdisjoint(codes)  # then the general "always" advice shows too
    child = age is not None and age < adult_age()
    advice = _select_advice(_advice_keys(request, codes, alerts, meds, conditions, symptoms, febrile,
                                         on_chemotherapy, child), low)
    assessment = Assessment(  # the required fields positionally, in their order: keywords cost twice as much
        counts, findings, alerts, chron, possible_causes, advice, profile, criteria_label(criteria),
        k.version, DISCLAIMER, scores=scores, warnings=warnings, patient=request.patient, time=current.time,
    )
    assessment.verdict = verdict_line(assessment)
    assessment.patient_summary = patient_lines(assessment, febrile, on_chemotherapy)
    assessment.clinician_summary = clinician_lines(assessment)
    return assessment
