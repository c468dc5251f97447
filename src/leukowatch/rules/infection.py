"""Fever and infection: febrile neutropenia (an emergency), MASCC and CISNE.

A temperature is never assumed. Without one, a neutropenic count gets the note "would meet febrile
neutropenia if febrile" and no alert, because an alarm built on a guessed fever is worse than none.
"""

from __future__ import annotations

from typing import Any

from ..knowledge import derived, load_table
from ..model import Alert, Score
from ..units import celsius_text
from .alerts import count_text, make_alert, urgent_care


@derived
def _rules() -> dict[str, Any]:
    return load_table("infection")


def febrile_neutropenia(anc: float | None, temperature_c: float | None, sustained_1h: bool,
                        anc_expected_to_fall: bool, *, fever_reported: bool = False, chemotherapy: bool = False,
                        anc_comparator: str | None = None) -> tuple[Alert | None, str | None]:
    """The febrile-neutropenia alert (IDSA, NICE CG151), or a note saying what would make it one.

    The ANC qualifies below 0.5 (IDSA), at or below 0.5 in a person on anticancer treatment (NICE
    CG151 counts ANC <= 0.5 there, so a chemotherapy patient exactly at 0.5 with a fever is not left
    without an alert), or below 1.0 when it is expected to fall (NCCN).

    Any measured temperature >= the sustained limit (38.0 °C) with a qualifying ANC is an alert:
    "confirmed" when IDSA's criteria hold (>= 38.3 °C once or >= 38.0 °C over 1 h), else "possible"
    (re-measure now; NICE already counts > 38 °C), never "below the threshold". A fever reported as
    a symptom with no measured temperature is "possible" too. Without either, only a note.
    """
    if anc is None:
        return None, None
    fn = _rules()["febrile_neutropenia"]
    below = anc < fn["anc_below"]
    at_nice_limit = not below and chemotherapy and anc <= fn["anc_at_most_on_anticancer_treatment"]
    anc_text = count_text("ANC", anc, anc_comparator)
    if not (below or at_nice_limit or (anc_expected_to_fall and anc < fn["anc_below_if_falling"])):
        if anc < fn["anc_below_if_falling"] and (fever_reported or (
                temperature_c is not None and temperature_c >= fn["sustained_temp_c"])):
            # a fever with an ANC under 1.0 not said to be falling: NCCN's criterion turns on the trend
            fever = "fever reported" if temperature_c is None else f"temperature {celsius_text(temperature_c)}"
            return None, fn["note_fever_if_falling"].format_map({**fn, "anc": anc_text, "fever": fever})
        return None, None
    if temperature_c is None and not fever_reported:
        return None, fn["note_no_temperature"].format_map({**fn, "anc": anc_text})
    if temperature_c is None:
        variant = "reported_fever"
    elif temperature_c >= fn["single_temp_c"] or (sustained_1h and temperature_c >= fn["sustained_temp_c"]):
        variant = "confirmed"
    elif temperature_c >= fn["sustained_temp_c"]:
        variant = "possible"
    else:
        return None, fn["note_not_febrile"].format_map({**fn, "temperature": celsius_text(temperature_c)})
    how = "" if below else (f", the NICE CG151 limit on anticancer treatment (ANC <= {fn['anc_at_most_on_anticancer_treatment']:g})"
                            if at_nice_limit else f", expected to fall below {fn['anc_below']:g}")
    temperature = "" if temperature_c is None else celsius_text(temperature_c)
    return make_alert("febrile_neutropenia", variant, anc=anc_text, how=how, temperature=temperature,
                      where=urgent_care(chemotherapy)), None


def _answer(inputs: dict[str, Any], item: dict[str, Any]) -> tuple[bool, bool]:
    """(given, earns_points) for one score item."""
    value = inputs.get(item["input"])
    if value is None:
        return False, False
    if "at_least" in item:
        return True, float(value) >= item["at_least"]
    if "below" in item:
        return True, float(value) < item["below"]
    favourable = item["favourable"]
    if isinstance(value, str):
        value = value.strip().lower()
    return True, value in favourable


@derived
def _mascc_inputs() -> tuple[tuple[str, str, int], ...]:
    """(input, what to call it when missing, the most points it can earn) per MASCC input, in order.

    Several items can share an input (burden of illness: mild earns 5, moderate 3).
    """
    items = _rules()["mascc"]["items"]
    out = []
    for inp in dict.fromkeys(i["input"] for i in items):
        mine = [i for i in items if i["input"] == inp]
        out.append((inp, "Burden of illness" if inp == "burden_of_illness" else mine[0]["label"],
                    max(i["points"] for i in mine)))
    return tuple(out)


@derived
def _mascc_age_below() -> float | None:
    return next((i["age_below"] for i in reversed(_rules()["mascc"]["items"]) if i["input"] == "age_under_60"), None)


def mascc(inputs: dict[str, Any], age_years: float | None) -> Score:
    """MASCC risk index; items not given are listed as missing and earn nothing (never assumed)."""
    spec = _rules()["mascc"]
    derived = dict(inputs)
    tumour = str(inputs.get("tumour", "")).lower() or None
    fungal = inputs.get("prior_fungal_infection")
    if tumour == "solid":
        derived["tumour_or_fungal"] = True
    elif tumour in ("hematologic", "haematological", "hematological") and fungal is not None:
        derived["tumour_or_fungal"] = not bool(fungal)
    age_below = _mascc_age_below()
    if age_below is not None and age_years is not None:
        derived["age_under_60"] = age_years < age_below
    items: dict[str, int] = {}
    given_inputs: set[str] = set()
    for item in spec["items"]:
        given, earns = _answer(derived, item)
        if given:
            given_inputs.add(item["input"])
            items[item["key"]] = item["points"] if earns else 0
    missing = [label for inp, label, _ in _mascc_inputs() if inp not in given_inputs]
    points = sum(items.values())
    complete = not missing
    missing_max = sum(most for inp, _, most in _mascc_inputs() if inp not in given_inputs)
    threshold = spec["low_risk_at_least"]
    if points >= threshold:
        risk = "low"
    elif points + missing_max < threshold:
        risk = "high"
    else:
        risk = None
    interp = (f"{points}/{spec['max_points']}: " + (
        f"{risk} risk (>= {threshold} is low risk)" if risk else
        f"incomplete: missing items could still reach {threshold}"))
    return Score(spec["name"], points, spec["max_points"], complete, risk, items, missing,
                 interp + f". Applies to: {spec['applies_to']}.", spec["source"])


def cisne(inputs: dict[str, Any], monocytes: float | None) -> Score:
    """CISNE score; the monocyte item is filled from the counts, the others only when given."""
    spec = _rules()["cisne"]
    derived = dict(inputs)
    if monocytes is not None:
        derived["monocytes"] = monocytes
    items: dict[str, int] = {}
    missing: list[str] = []
    for item in spec["items"]:
        given, earns = _answer(derived, item)
        if not given:
            missing.append(item["label"])
            continue
        items[item["key"]] = item["points"] if earns else 0
    points = sum(items.values())
    max_points = _cisne_max_points()
    bands = spec["bands"]
    risk_now = next(b["risk"] for b in bands if points <= b["max_points"])
    worst = points + sum(i["points"] for i in spec["items"] if i["label"] in missing)
    risk_worst = next(b["risk"] for b in bands if worst <= b["max_points"])
    risk = risk_now if risk_now == risk_worst else None
    interp = (f"{points}/{max_points}: " + (f"{risk} risk" if risk else
                                           f"at least {risk_now} risk; missing items could raise it"))
    return Score(spec["name"], points, max_points, not missing, risk, items, missing,
                 interp + f". Applies to: {spec['applies_to']}.", spec["source"])


@derived
def _cisne_max_points() -> int:
    return sum(i["points"] for i in _rules()["cisne"]["items"])
