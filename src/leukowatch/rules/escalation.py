"""What is urgent without a fever: severe neutropenia, hyperleukocytosis, drug-induced agranulocytosis.

The levels follow practice (docs/clinical-reference.md §11): an ANC < 0.5 during an expected chemotherapy
nadir is a warning, but the same count in someone not on chemotherapy is a laboratory critical value
(same-day review), and < 0.1 is critical for everyone. Which row of knowledge/alerts.toml fires is
decided here; the numbers and the words are in the table.
"""

from __future__ import annotations

from datetime import date

from ..knowledge import derived, load_table
from ..model import Alert, Chemotherapy, Count, MedicationMatch
from .alerts import count_text, make_alert, threshold, urgent_care


def severe_neutropenia(anc: Count | None, chemotherapy: bool) -> Alert | None:
    """Severe (< 0.5) or profound (< 0.1) neutropenia, its level set by the chemotherapy context."""
    if anc is None or not anc.value < threshold("severe_neutropenia", "not_on_chemotherapy", "anc_below"):
        return None
    if anc.value < threshold("severe_neutropenia", "profound", "anc_below"):
        variant = "profound"
    else:
        variant = "chemotherapy_nadir" if chemotherapy else "not_on_chemotherapy"
    return make_alert("severe_neutropenia", variant, anc=count_text("ANC", anc.value, anc.comparator))


def hyperleukocytosis(wbc: Count | None) -> Alert | None:
    """WBC > 100 x10^9/L: leukostasis risk, urgent haematology (CTCAE v5 Leukocytosis grade 3)."""
    if wbc is None or not wbc.value > threshold("hyperleukocytosis", "default", "wbc_above"):
        return None
    return make_alert("hyperleukocytosis", "default", wbc=count_text("WBC", wbc.value, wbc.comparator))


def without_differential(wbc: Count | None, anc: Count | None, febrile: bool, chemotherapy: bool) -> Alert | None:
    """A very low WBC with no ANC measured: the ANC is part of the WBC, so it can be no higher. With a
    fever that is possible febrile neutropenia; without one, a laboratory critical value (WBC <= 1.0).
    Staying silent until a differential arrives would under-escalate exactly the people most at risk."""
    if anc is not None or wbc is None:
        return None
    if febrile:
        if not wbc.value < threshold("febrile_neutropenia", "wbc_only", "wbc_below"):
            return None
        return make_alert("febrile_neutropenia", "wbc_only", wbc=count_text("WBC", wbc.value, wbc.comparator),
                          where=urgent_care(chemotherapy))
    if not wbc.value <= threshold("severe_neutropenia", "wbc_only", "wbc_at_most"):
        return None
    return make_alert("severe_neutropenia", "wbc_only", wbc=count_text("WBC", wbc.value, wbc.comparator))


def drug_agranulocytosis(anc: Count | None, meds: list[MedicationMatch], febrile: bool) -> list[Alert]:
    """ANC < 0.5 with a current non-chemotherapy medicine on the highest-risk list: one alert per
    medicine, naming it and its class; stopping it stays the prescriber's decision (clinician text)."""
    variant = "fever" if febrile else "afebrile"
    if anc is None or not anc.value < threshold("drug_agranulocytosis", variant, "anc_below"):
        return []
    alerts: list[Alert] = []
    seen: set[str] = set()
    anc_text = count_text("ANC", anc.value, anc.comparator)
    for m in meds:
        if m.risk != "high" or m.chemotherapy or m.generic in seen:
            continue
        seen.add(m.generic)
        alerts.append(make_alert("drug_agranulocytosis", variant, anc=anc_text, medicine=m.input,
                                 generic=m.generic, drug_class=m.drug_class))
    return alerts


@derived
def _nadir_ends_day() -> int:
    return int(load_table("timeline")["chemotherapy_nadir"]["nadir_to_day"])


def anc_expected_to_fall(chemo: Chemotherapy, result: date | None) -> bool:
    """Whether the ANC is expected to fall further: chemotherapy active and the result before the end
    of the usual nadir window after the last dose (timeline.toml chemotherapy_nadir, day 7-14). The
    NCCN reading of febrile neutropenia (ANC < 1.0 with a predicted decline) then applies without
    the request having to say so; an undated result is read as today."""
    doses = [d for d in (chemo.last_dose, *chemo.dose_dates) if d is not None]
    if not chemo.active or not doses:
        return False
    days = ((result or date.today()) - max(doses)).days
    return 0 <= days < _nadir_ends_day()
