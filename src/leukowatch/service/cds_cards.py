"""An Assessment -> CDS Hooks cards (summary < 140 characters, indicator, markdown detail, source, links).

Pure functions of the assessment: the EHR shows the same findings, grades and sources as the web page
and the CLI, only shaped as cards. One card per hook call keeps the EHR quiet; its indicator is the
most urgent level among the alerts and findings.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..model import Assessment, Finding, MedicationMatch
from ..rules.findings import below_range_codes, graded_within_range
from ..vocabulary import analyte as analyte_words

#: CDS Hooks: "summary ... SHALL be less than 140 characters".
SUMMARY_MAX = 139
_LEVELS = ("info", "warning", "critical")


def short(text: str, limit: int = SUMMARY_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def indicator(a: Assessment) -> str:
    level = 0
    for al in a.alerts:
        level = max(level, _LEVELS.index(al.level))
    # a DAIDS grade of a count within its range is shown, but is no low count to warn of
    if not below_range_codes(a.findings, a.counts).isdisjoint(("leukopenia", "neutropenia", "pancytopenia")):
        level = max(level, 1)
    return _LEVELS[level]


def count_text(a: Assessment, analyte: str) -> str:
    """'ANC 0.42 x10^9/L (420 cells/µL)' — both units, as the article speaks in cells/µL."""
    c = a.counts.get(analyte)
    if c is None:
        return ""
    cells = f" ({c.per_uL:,} cells/µL)" if c.per_uL is not None else ""
    return f"{analyte_words(analyte).short} {c.comparator or ''}{c.value:.3g} ×10⁹/L{cells}"


def _grade(f: Finding) -> str:
    parts = [f"{f.criteria} grade {f.grade}" if f.grade is not None else "", f.severity or ""]
    return ", ".join(p for p in parts if p)


def detail_markdown(a: Assessment) -> str:
    lines: list[str] = []
    if a.alerts:
        lines.append("**Alerts**")
        lines += [f"- **{al.level.upper()}**: {al.message}" for al in a.alerts]
        lines.append("")
    if a.findings:
        lines.append(f"**Findings** (profile {a.profile}, {a.criteria})")
        for f in a.findings:
            grade = _grade(f)
            lines.append(f"- **{f.code}**{f' ({grade})' if grade else ''}: {f.analyte} {f.value:.3g} {f.unit}; "
                         f"{f.rule}. *Source: {f.source}*")
        lines.append("")
    meds: list[MedicationMatch] = a.possible_causes.get("medications", [])
    conds = a.possible_causes.get("conditions", [])
    if meds or conds:
        lines.append("**Possible causes**")
        lines += [f"- {m.input} → {m.generic} ({m.drug_class}): {m.why} *Source: {m.source}*" for m in meds]
        lines += [f"- {c.input} → {c.name}: {c.article_wording} *Source: {c.source}*" for c in conds]
        lines.append("")
    if a.chronicity.status != "undetermined":
        lines.append(f"**Course**: {a.chronicity.status}" +
                     (f" — {a.chronicity.evidence[0]}" if a.chronicity.evidence else ""))
        lines.append("")
    if a.advice.treatment:
        lines.append("**Next steps**")
        lines += [f"- {t}" for t in a.advice.treatment[:4]]
        lines.append("")
    lines.append(f"*{a.disclaimer}* (knowledge {a.knowledge_version})")
    return "\n".join(lines)


def card(summary: str, level: str, detail: str, source: dict[str, str], links: list[dict[str, str]]) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "summary": short(summary), "indicator": level, "detail": detail,
            "source": source, "links": links}


def patient_view_cards(a: Assessment, source: dict[str, str], links: list[dict[str, str]]) -> list[dict[str, Any]]:
    """One card when anything was found; none for a normal count (no news is no card)."""
    if not a.findings and not a.alerts:
        return []
    return [card(f"leukowatch: {a.verdict}", indicator(a), detail_markdown(a), source, links)]


def order_select_cards(a: Assessment | None, ordered: list[MedicationMatch], lookback_days: int,
                       source: dict[str, str], links: list[dict[str, str]]) -> list[dict[str, Any]]:
    """A warning for a listed medicine ordered while white cells are low, naming the drug and the count.

    With no recent count, an info card suggests a baseline count; with normal counts, no card.
    """
    if not ordered:
        return []
    drugs = ", ".join(dict.fromkeys(m.generic for m in ordered))
    why = "\n".join(f"- **{m.generic}** ({m.drug_class}): {m.why} *Source: {m.source}*" for m in ordered)
    if a is None:
        return [card(f"{drugs}: linked to low white cells; no blood count in the last {lookback_days} days",
                     "info", f"Consider a baseline complete blood count with differential.\n\n{why}", source, links)]
    below = [f for f in a.findings if not graded_within_range(f, a.counts)]
    low = next((f for f in below if f.code == "neutropenia"), None) or \
        next((f for f in below if f.code == "leukopenia"), None)
    if low is None:
        return []
    count = count_text(a, low.analyte)
    grade = _grade(low)
    summary = f"{drugs} ordered with {low.code}: {count}"
    level = "critical" if any(al.level == "critical" for al in a.alerts) else "warning"
    detail = (f"The patient has **{low.code}**{f' ({grade})' if grade else ''}: {count}. "
              f"The ordered medicine is linked to low white cells:\n\n{why}\n\n" + detail_markdown(a))
    return [card(short(summary), level, detail, source, links)]
