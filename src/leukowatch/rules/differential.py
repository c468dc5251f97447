"""Absolute counts from a differential, and the checks a lab applies to one.

Labs often send only percentages; the absolute count is what the rules need (ANC, not % neutrophils),
so it is derived as WBC x % / 100 and marked `derived`. When both forms are sent the absolute
count wins (it is what the analyser measured) and a disagreement of more than the plausibility
tolerance is reported, not silently resolved.
"""

from __future__ import annotations

from ..model import DIFFERENTIAL_ANALYTES, Observation
from ..numtext import G
from ..units import plausibility

#: The five-part differential whose percentages should add up to about 100.
FIVE_PART: tuple[str, ...] = ("neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils")


#: One analyte at one blood draw, absolute where it can be:
#: (value, unit, percent, derived, derivation, observation). `observation` is the measured one (its
#: lab range and comparator count only when the value is not derived). A plain tuple: a draw makes one
#: per analyte and `counts.evaluate_draw` unpacks it at once, and a class instance costs more to build
#: than everything done with it.
DrawValue = tuple[float, str, float | None, bool, str | None, Observation | None]
#: The differential percentages besides the neutrophils (given as neutrophils or as segmented + bands).
_FIVE_PART_REST_ORDER = FIVE_PART[1:]
_FIVE_PART_REST = frozenset(_FIVE_PART_REST_ORDER)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


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


def derive_draw(observations: list[Observation]) -> tuple[dict[str, DrawValue], list[str]]:
    """Absolute values for every analyte one draw supports, plus the differential's warnings."""
    absolute, percent, warnings = _latest_by_analyte(observations)
    limits = plausibility()
    values: dict[str, DrawValue] = {}
    for analyte, obs in absolute.items():
        if analyte != "segmented_neutrophils":
            values[analyte] = (obs.value, obs.unit, None, False, None, obs)

    wbc = absolute.get("wbc")
    if "neutrophils" not in values:
        _derive_anc(absolute, percent, wbc, values)
    wbc_text = None if wbc is None else _fmt(wbc.value)
    for analyte in DIFFERENTIAL_ANALYTES:
        if analyte == "segmented_neutrophils" or analyte not in percent:
            continue
        pct = percent[analyte].value
        if analyte in values:
            measured, unit, had_pct, derived, derivation, obs = values[analyte]
            values[analyte] = (measured, unit, had_pct or pct, derived, derivation, obs)
            if wbc is not None and not derived:
                expected = wbc.value * pct / 100.0
                scale = max(expected, measured)
                if scale > 0 and abs(expected - measured) / scale > limits["absolute_vs_percent_tolerance"]:
                    warnings.append(
                        f"{analyte}: absolute count {_fmt(measured)} x10^9/L disagrees with WBC x % "
                        f"= {wbc_text} x {pct:g}% = {_fmt(expected)} by more than "
                        f"{limits['absolute_vs_percent_tolerance']:.0%}; the absolute count is used")
        elif wbc is not None:
            values[analyte] = (wbc.value * pct / 100.0, "10^9/L", pct, True, f"WBC {wbc_text} x {G[pct]}% / 100",
                               percent[analyte])
        else:
            warnings.append(f"{analyte}: {pct:g}% given without a WBC, so no absolute count can be derived")

    if ("neutrophils" in percent or "segmented_neutrophils" in percent) and percent.keys() >= _FIVE_PART_REST:
        neut_pct = percent["neutrophils"].value if "neutrophils" in percent else (
            percent["segmented_neutrophils"].value + (percent["bands"].value if "bands" in percent else 0.0))
        rest = 0.0  # added in FIVE_PART's order, as sum() would, without a comprehension per draw
        for analyte in _FIVE_PART_REST_ORDER:
            rest += percent[analyte].value
        total = neut_pct + rest
        if not limits["differential_sum_low"] <= total <= limits["differential_sum_high"]:
            warnings.append(f"differential percentages add up to {total:g}% (expected "
                            f"{limits['differential_sum_low']:g}-{limits['differential_sum_high']:g}%); "
                            "check the differential")
    return values, warnings


def _derive_anc(absolute: dict[str, Observation], percent: dict[str, Observation],
                wbc: Observation | None, values: dict[str, DrawValue]) -> None:
    """ANC = segmented + bands (MDCalc ANC; UpToDate), from absolute counts or from WBC x %."""
    segs, bands = absolute.get("segmented_neutrophils"), absolute.get("bands")
    if segs is not None:
        total = segs.value + (bands.value if bands is not None else 0.0)
        how = f"segmented {_fmt(segs.value)}" + (f" + bands {_fmt(bands.value)}" if bands is not None else "")
        values["neutrophils"] = (total, "10^9/L", None, True, f"ANC = {how}", segs)
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
            percent["segmented_neutrophils"])
