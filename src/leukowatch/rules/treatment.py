"""Treatment context: whether counts allow the next chemotherapy cycle, and label drug monitoring.

Clinician-facing only. The words follow the label ("Label: interrupt clozapine") and the decision
stays with the prescriber; patient-facing text never tells anyone to stop a medicine.
"""

from __future__ import annotations

from typing import Any

from ..knowledge import derived, load_table
from ..model import Alert, Chemotherapy, Count, MedicationMatch
from .alerts import count_text, make_alert


def hold_thresholds(chemo: Chemotherapy) -> tuple[dict[str, float], str]:
    """Regimen-specific thresholds when known, else the common defaults; request overrides win."""
    table = load_table("treatment")["chemotherapy_hold"]
    thresholds = dict(table["default"])
    source = table["source"]
    regimen = (chemo.regimen or "").strip().lower()
    if regimen in table.get("regimens", {}):
        spec = table["regimens"][regimen]
        thresholds.update({k: v for k, v in spec.items() if k != "source"})
        source = spec["source"]
    if chemo.hold_thresholds:
        thresholds.update(chemo.hold_thresholds)
        source = "thresholds given with the request (regimen-specific)"
    return thresholds, source


def chemotherapy_hold(chemo: Chemotherapy, counts: dict[str, Count]) -> Alert | None:
    if not chemo.active:
        return None
    thresholds, source = hold_thresholds(chemo)
    below = [f"{a} {counts[a].comparator or ''}{counts[a].value:g} < {limit:g} x10^9/L" for a, limit in thresholds.items()
             if a in counts and counts[a].value < limit]
    if not below:
        return None
    alert = make_alert("chemotherapy_hold", "default", details="; ".join(below))
    alert.rule = "proceed only with " + " and ".join(f"{a} >= {v:g}" for a, v in thresholds.items())
    alert.source = source
    return alert


def drug_monitoring(matches: list[MedicationMatch], anc: float | None, duffy_null: bool,
                    anc_comparator: str | None = None) -> list[Alert]:
    """Label ANC bands for drugs with monitoring tables (clozapine, deferiprone); `matches` are the
    medicines currently taken (a stopped one has no label band to follow)."""
    if anc is None:
        return []
    alerts: list[Alert] = []
    seen: set[str] = set()
    for match in matches:
        key = match.monitoring
        if key is None or key in seen:
            continue
        seen.add(key)
        spec = load_table("treatment")["monitoring"][key]
        table_name = "duffy_null" if duffy_null and "duffy_null" in spec else "general"
        for limit, band in _bands(key, table_name):
            if anc < limit:
                which = "Duffy-null/BEN table" if table_name == "duffy_null" else "general-population table"
                alert = make_alert("drug_monitoring", band["level"], drug_title=spec["drug"].capitalize(),
                                   medicine=match.input, anc=count_text("ANC", anc, anc_comparator),
                                   band=band["band"], table=which, action=band["action"], confirm=spec["confirm"])
                alert.rule = f"{spec['drug']} label ANC bands, {which}"
                alert.source = spec["source"]
                alerts.append(alert)
                break
    return alerts


@derived
def _bands(drug: str, table_name: str) -> tuple[tuple[float, dict[str, Any]], ...]:
    """A label's ANC bands with their upper limits as numbers ("inf" for the last), read once."""
    bands = load_table("treatment")["monitoring"][drug][table_name]
    return tuple((float("inf") if band["below"] == "inf" else float(band["below"]), band) for band in bands)
