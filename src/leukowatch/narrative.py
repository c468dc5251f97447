"""The words of an assessment: a verdict line, plain patient text and terse clinician lines.

All three are built from the same findings and alerts, so the patient and the clinician are never
told different things. Patient text follows the article's plain language and never tells anyone to
stop a medicine (the article: consult a professional first).
"""

from __future__ import annotations

from .model import Assessment, Finding
from .numtext import PER_UL, G

DISCLAIMER = (
    "Decision support, not a diagnosis. leukowatch applies published thresholds to the numbers given; "
    "it cannot examine you or know your full history. Discuss the results with a healthcare professional, "
    "and never stop or change a medicine without first consulting one."
)

_PLAIN_NAMES = {
    "leukopenia": "white blood cell count is low (leukopenia)",
    "neutropenia": "neutrophils, the white cells that fight bacteria, are low (neutropenia)",
    "lymphocytopenia": "lymphocytes, the white cells that fight viruses, are low (lymphocytopenia)",
    "monocytopenia": "monocytes are low (monocytopenia)",
    "eosinopenia": "eosinophils are low (eosinopenia)",
    "basopenia": "basophils are very low or absent (basopenia)",
    "leukocytosis": "white blood cell count is high (leukocytosis)",
    "neutrophilia": "neutrophils are high (neutrophilia)",
    "lymphocytosis": "lymphocytes are high (lymphocytosis)",
    "monocytosis": "monocytes are high (monocytosis)",
    "eosinophilia": "eosinophils are high (eosinophilia)",
    "basophilia": "basophils are high (basophilia)",
    "anemia": "hemoglobin is low (anemia)",
    "thrombocytopenia": "platelets, which help blood clot, are low (thrombocytopenia)",
    "pancytopenia": "red cells, white cells and platelets are all low together (pancytopenia)",
}
_WHITE = frozenset({"leukopenia", "neutropenia", "lymphocytopenia", "monocytopenia", "eosinopenia", "basopenia"})
_OTHER = frozenset({"anemia", "thrombocytopenia", "pancytopenia"})


def _grade_text(f: Finding) -> str:
    if f.grade is not None:
        return f" ({f.criteria} grade {f.grade}, {f.severity})" if f.severity else f" ({f.criteria} grade {f.grade})"
    return f" ({f.severity})" if f.severity else ""


def verdict_line(a: Assessment) -> str:
    """One line a busy reader can act on: what is low, how badly, and any emergency first."""
    head = []
    if a.alert("febrile_neutropenia"):
        head.append("EMERGENCY: febrile neutropenia")
    white, others = [], []  # "code (grade, severity)" of each white-cell finding, and of the others
    for f in a.findings:
        if f.code in _WHITE:
            white.append(f"{f.code}{_grade_text(f)}")
        elif f.code in _OTHER:
            others.append(f"{f.code}{_grade_text(f)}")
    if white:
        body = "; ".join(white)
        if a.chronicity.status in ("acute", "chronic"):
            body += f"; {a.chronicity.status}"
        head.append(body)
    else:
        wbc = a.counts.get("wbc")
        if wbc is not None and wbc.flag == "high":
            head.append(f"No leukopenia; WBC is high{_grade_text(a.finding('leukocytosis'))}"
                        if a.finding("leukocytosis") else "No leukopenia; WBC is high")
        elif a.counts:
            head.append(f"No leukopenia: white-cell counts are not low against the {a.profile} profile")
        else:
            head.append("No white-cell counts to assess")
    if others:
        head.append("also " + ", ".join(others))
    return " — ".join(head)


def patient_lines(a: Assessment) -> list[str]:
    lines: list[str] = []
    if a.alert("febrile_neutropenia"):
        team = "cancer care team" if a.alert("chemotherapy_hold") or any(
            m.chemotherapy for m in a.possible_causes.get("medications", [])) else "doctor"
        lines.append("You have a fever and a very low neutrophil count. This is an emergency: contact your "
                     f"{team} or go to an emergency department now.")
    for f in a.findings:
        plain = _PLAIN_NAMES.get(f.code, f.code)
        if f.unit == "10^9/L" and f.code != "pancytopenia":
            lines.append(f"Your {plain}: {PER_UL[f.value]} cells per microlitre.")
        else:
            lines.append(f"Your {plain}.")
    codes = {f.code for f in a.findings}
    if _WHITE.isdisjoint(codes) and a.counts:
        lines.append("Your white blood cell counts are not low.")
    if a.chronicity.status == "chronic":
        lines.append("Your results have been low on several occasions over at least three months, which "
                     "doctors call chronic.")
    if "leukopenia" in codes or "neutropenia" in codes:
        lines.append("A low white cell count can make infections more likely. Watch for fever, chills, "
                     "sore throat or other signs of infection.")
    meds = a.possible_causes.get("medications", [])
    if meds:
        names = ", ".join([m.input for m in meds])
        lines.append(f"Some medicines you listed ({names}) can lower white cells. Do not stop or change any "
                     "medicine on your own: talk to your doctor or pharmacist first.")
    if a.alert("chemotherapy_hold"):
        lines.append("Your care team may decide to wait before the next chemotherapy cycle so your white "
                     "cells can recover.")
    return lines


def clinician_lines(a: Assessment) -> list[str]:
    lines = [f"[{al.level.upper()}] {al.message}" for al in a.alerts]
    for f in a.findings:
        if f.grade is not None:
            lines.append(f"{f.code}: {G[f.value]} {f.unit}; {f.term} G{f.grade} ({f.criteria}); threshold {f.threshold}")
        else:
            lines.append(f"{f.code}: {G[f.value]} {f.unit}; not graded; threshold {f.threshold}")
    if a.chronicity.status != "undetermined":
        lines.append(f"chronicity: {a.chronicity.status} — {a.chronicity.evidence[0]}")
    for m in a.possible_causes.get("medications", []):
        lines.append(f"possible drug cause: {m.input} -> {m.generic} ({m.drug_class}); {m.why}")
    for c in a.possible_causes.get("conditions", []):
        lines.append(f"possible condition: {c.input} -> {c.name} ({c.category}, {c.course})")
    for s in a.scores:
        lines.append(f"{s.name}: {s.interpretation}" + (f" Missing: {', '.join(s.missing)}." if s.missing else ""))
    return lines
