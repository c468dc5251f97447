"""Absolute counts from a differential, and the checks a lab applies to one.

Labs often send only percentages; the absolute count is what the rules need (ANC, not % neutrophils),
so it is derived as WBC x % / 100 and marked `derived`. When both forms are sent the absolute
count wins (it is what the analyser measured) and a disagreement of more than the plausibility
tolerance is reported, not silently resolved.
"""

from __future__ import annotations

from typing import NamedTuple

from ..model import DIFFERENTIAL_ANALYTES, Observation
from ..numtext import G
from ..units import conversion, plausibility, smaller_than_canonical

#: The five-part differential whose percentages should add up to about 100.
FIVE_PART: tuple[str, ...] = ("neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils")


#: One analyte at one blood draw, absolute where it can be:
#: (value, unit, percent, derived, derivation, observation, comparator). `observation` is the measured
#: one (its lab range counts only when the value is not derived); `comparator` is the reported '<' or
#: '>' of the value, or of the values it was derived from when they agree (WBC <1.0 x 50% is <0.5).
#: A plain tuple: a draw makes one per analyte and `counts.evaluate_draw` unpacks it at once, and a
#: class instance costs more to build than everything done with it.
DrawValue = tuple[float, str, float | None, bool, str | None, Observation | None, str | None]
#: The differential percentages besides the neutrophils (given as neutrophils or as segmented + bands).
_FIVE_PART_REST_ORDER = FIVE_PART[1:]
_FIVE_PART_REST = frozenset(_FIVE_PART_REST_ORDER)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _joint_comparator(*observations: Observation | None) -> str | None:
    """The direction a value derived from these (by sums and products of non-negative numbers)
    inherits: '<' when every bound given is an upper bound, '>' when every one is a lower bound,
    None when no bound was reported or they pull both ways (then nothing can be said)."""
    found: set[str] = set()
    for obs in observations:
        if obs is not None and obs.comparator is not None:
            found.add(obs.comparator[0])
    return found.pop() if len(found) == 1 else None


def _latest_by_analyte(observations: list[Observation]) -> tuple[dict[str, Observation],
                                                                  dict[str, Observation], list[str]]:
    absolute: dict[str, Observation] = {}
    percent: dict[str, Observation] = {}
    warnings: list[str] = []
    for obs in observations:
        target = percent if obs.percent else absolute
        analyte = obs.analyte
        earlier = target.get(analyte)
        if earlier is not None and earlier.value != obs.value:
            kind = "percentage" if obs.percent else "value"
            warnings.append(f"{analyte}: two different {kind}s in one draw "
                            f"({_fmt(earlier.value)} and {_fmt(obs.value)}); the later one is used")
        target[analyte] = obs
    return absolute, percent, warnings


class DerivedDraw(NamedTuple):
    """Absolute values for every analyte one draw supports, and the differential's warnings."""

    values: dict[str, DrawValue]
    warnings: list[str]


def derive_draw(observations: list[Observation]) -> DerivedDraw:
    """Absolute values for every analyte one draw supports, plus the differential's warnings."""
    absolute, percent, warnings = _latest_by_analyte(observations)
    limits = plausibility()
    values: dict[str, DrawValue] = {}
    for analyte, obs in absolute.items():
        if analyte != "segmented_neutrophils":
            values[analyte] = (obs.value, obs.unit, None, False, None, obs, obs.comparator)
    wbc = absolute.get("wbc")
    if wbc is not None and 0 < wbc.value < limits["min_reported_wbc"] and _per_microlitre(wbc):
        warnings.append(_unit_slip_warning(wbc, limits["min_reported_wbc"]))
        del values["wbc"]  # not graded: a WBC no analyser reports is a unit slip, not agranulocytosis
        absolute.pop("wbc")

    wbc = absolute.get("wbc")
    if "neutrophils" not in values:
        _derive_anc(absolute, percent, wbc, values)
    wbc_text = None if wbc is None else _fmt(wbc.value)
    for analyte in DIFFERENTIAL_ANALYTES:
        if analyte == "segmented_neutrophils" or analyte not in percent:
            continue
        pct = percent[analyte].value
        if analyte in values:
            measured, unit, had_pct, derived, derivation, obs, comparator = values[analyte]
            values[analyte] = (measured, unit, had_pct or pct, derived, derivation, obs, comparator)
            if wbc is not None and not derived:
                expected = wbc.value * pct / 100.0
                scale = max(expected, measured)
                if scale > 0 and abs(expected - measured) / scale > limits["absolute_vs_percent_tolerance"]:
                    warnings.append(
                        f"{analyte}: absolute count {_fmt(measured)} x10^9/L disagrees with WBC x % "
                        f"= {wbc_text} x {pct:g}% = {_fmt(expected)} by more than "
                        f"{limits['absolute_vs_percent_tolerance']:.0%}; the absolute count is used")
        elif wbc is not None and analyte == "neutrophils" and "bands" in percent:
            # ANC = segmented + bands: a differential listing bands apart gives "neutrophils" without them.
            band_pct = percent["bands"].value
            values[analyte] = (wbc.value * (pct + band_pct) / 100.0, "10^9/L", pct + band_pct, True,
                               f"ANC = WBC {wbc_text} x (neutrophils {G[pct]}% + bands {G[band_pct]}%) / 100",
                               percent[analyte], _joint_comparator(wbc, percent[analyte], percent["bands"]))
        elif wbc is not None:
            values[analyte] = (wbc.value * pct / 100.0, "10^9/L", pct, True, f"WBC {wbc_text} x {G[pct]}% / 100",
                               percent[analyte], wbc.comparator if percent[analyte].comparator is None
                               else _joint_comparator(wbc, percent[analyte]))
        else:
            warnings.append(f"{analyte}: {pct:g}% given without a WBC, so no absolute count can be derived")

    if percent and (problem := _sum_problem(percent, limits)) is not None:
        warnings.append(problem)
    return DerivedDraw(values, warnings)


def _sum_problem(percent: dict[str, Observation], limits: dict[str, float]) -> str | None:
    """The warning owed when the differential percentages cannot be right: a five-part differential
    outside 90-110 %, or any part of one already above 110 % (then a derived count exceeds the WBC it
    is a share of, e.g. neutrophils 80 % + bands 30 % gave an ANC of 1.1 x WBC without a word)."""
    neut = percent.get("neutrophils") or percent.get("segmented_neutrophils")
    total = (neut.value if neut is not None else 0.0) + (percent["bands"].value if "bands" in percent else 0.0)
    for analyte in _FIVE_PART_REST_ORDER:  # added in FIVE_PART's order, as sum() would
        obs = percent.get(analyte)
        if obs is not None:
            total += obs.value
    low, high = limits["differential_sum_low"], limits["differential_sum_high"]
    if neut is not None and percent.keys() >= _FIVE_PART_REST:
        if not low <= total <= high:
            return f"differential percentages add up to {total:g}% (expected {low:g}-{high:g}%); check the differential"
    elif total > high:
        return (f"the differential percentages given add up to {total:g}%, more than {high:g}% of the WBC; "
                "check the differential")
    return None


def _derive_anc(absolute: dict[str, Observation], percent: dict[str, Observation],
                wbc: Observation | None, values: dict[str, DrawValue]) -> None:
    """ANC = segmented + bands (MDCalc ANC; UpToDate), from absolute counts or from WBC x %."""
    segs, bands = absolute.get("segmented_neutrophils"), absolute.get("bands")
    if segs is not None:
        total = segs.value + (bands.value if bands is not None else 0.0)
        how = f"segmented {_fmt(segs.value)}" + (f" + bands {_fmt(bands.value)}" if bands is not None else "")
        values["neutrophils"] = (total, "10^9/L", None, True, f"ANC = {how}", segs, _joint_comparator(segs, bands))
        return
    if wbc is None:
        return
    if "neutrophils" in percent:
        return  # derived with the other percentages
    if "segmented_neutrophils" in percent:
        seg_pct = percent["segmented_neutrophils"].value
        band_pct = percent["bands"].value if "bands" in percent else 0.0
        values["neutrophils"] = (
            wbc.value * (seg_pct + band_pct) / 100.0, "10^9/L", seg_pct + band_pct, True,
            f"ANC = WBC {_fmt(wbc.value)} x (segmented {seg_pct:g}% + bands {band_pct:g}%) / 100",
            percent["segmented_neutrophils"],
            _joint_comparator(wbc, percent["segmented_neutrophils"], percent.get("bands")))


def _per_microlitre(obs: Observation) -> bool:
    """Whether the count was sent in a cells-per-microlitre unit (a factor below 1 to 10^9/L)."""
    return obs.original_unit is not None and smaller_than_canonical(
        conversion(obs.analyte, obs.original_unit, "unit").factor)


def _unit_slip_warning(wbc: Observation, min_reported: float) -> str:
    """The warning for a WBC below what analysers report: almost always K/uL sent as cells/uL."""
    unit = wbc.original_unit
    as_given = wbc.value / conversion("wbc", unit, "unit").factor
    return (f"wbc: {G[as_given]} {unit} is {wbc.value:.2g} x10^9/L, below the {G[min_reported]} x10^9/L "
            f"({G[min_reported * 1000.0]}/µL) any analyser reports for a living person: did you mean K/µL "
            f"({G[as_given]} x10^9/L)? The WBC was not graded; confirm the unit and send it again")
