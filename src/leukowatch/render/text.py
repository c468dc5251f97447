"""The Assessment as a readable terminal report (rich): verdict first, alerts in colour on top.

Order follows what a reader needs first: is it an emergency, what is low, the numbers with both
units (×10⁹/L for clinicians, cells/µL as the article speaks), why, what may cause it, what to do.
Every sentence goes through the one unit notation people read (`render.display.readable_units`),
as the pages do: the rules keep the notation a log can carry.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..model import Assessment, Count
from ..rules.findings import below_range_codes
from ..vocabulary import analyte, low_white
from .display import readable_units as _u

_LEVEL_STYLE = {"critical": "bold white on red", "warning": "bold black on yellow", "info": "bold white on blue"}
_FLAG_STYLE = {"low": "bold red", "high": "bold magenta", "normal": "green"}
_ORDER = ("wbc", "neutrophils", "bands", "lymphocytes", "monocytes", "eosinophils", "basophils",
          "hemoglobin", "platelets", "rbc", "hematocrit")


def _range_text(c: Count) -> str:
    rr = c.reference_range
    if rr is None or (rr.low is None and rr.high is None):
        return "-"
    low = "" if rr.low is None else f"{rr.low:g}"
    high = "" if rr.high is None else f"{rr.high:g}"
    return f"{low}–{high}" if low and high else (f">= {low}" if low else f"<= {high}")


def counts_table(a: Assessment) -> Table:
    table = Table(title="Counts", title_justify="left", expand=False)
    for col in ("analyte", "value", "unit", "cells/µL", "%", "flag", "range", "range from"):
        table.add_column(col)
    for name in _ORDER:
        c = a.counts.get(name)
        if c is None:
            continue
        value = f"{c.comparator or ''}{c.value:.3g}" + (" *" if c.derived else "")
        table.add_row(
            analyte(name).label, value, _u(c.unit), "" if c.per_uL is None else f"{c.comparator or ''}{c.per_uL:,}",
            "" if c.percent is None else f"{c.percent:g}", Text(c.flag.upper() if c.flag != "normal" else "ok",
                                                                 style=_FLAG_STYLE[c.flag]),
            _range_text(c), c.range_source,
        )
    return table


def render(a: Assessment) -> Group:
    parts: list = []
    below = below_range_codes(a.findings, a.counts)  # a DAIDS grade within the range is not shown as low
    verdict_style = "bold red" if not low_white().isdisjoint(below) else "bold green"
    if a.alert("febrile_neutropenia"):
        verdict_style = "bold white on red"
    parts.append(Text(_u(a.verdict), style=verdict_style))
    for al in a.alerts:
        parts.append(Text.assemble((f" {al.level.upper()} ", _LEVEL_STYLE[al.level]), " ", _u(al.message)))
    parts.append(counts_table(a))
    if any(c.derived for c in a.counts.values()):
        parts.append(Text("* derived from the differential: " + "; ".join(
            _u(c.derivation) for c in a.counts.values() if c.derived and c.derivation), style="dim"))
    if a.findings:
        parts.append(Text("Findings", style="bold underline"))
        for f in a.findings:
            grade = "not graded" if f.grade is None else f"{f.criteria} grade {f.grade}"
            sign = f.comparator or ""
            amount = f"{sign}{f.value:g} {_u(f.unit)}" + (f" ({sign}{f.value * 1000:,.0f}/µL)" if f.unit == "10^9/L" else "")
            severity = ((f"; ANC severity: {f.severity}" if f.code == "neutropenia" else f", {f.severity}")
                        if f.severity else "")
            parts.append(Text.assemble((f"  {f.code}", "bold"), f" — {amount} — {grade}", severity))
            parts.append(Text(f"      threshold: {_u(f.threshold)}", style="dim"))
            parts.append(Text(f"      rule: {_u(f.rule)}", style="dim"))
            parts.append(Text(f"      source: {_u(f.source)}", style="dim"))
            for note in f.notes:
                parts.append(Text(f"      note: {_u(note)}", style="yellow"))
    parts.append(Text(f"Chronicity: {a.chronicity.status}"
                      + (f" ({a.chronicity.analyte})" if a.chronicity.analyte else ""), style="bold"))
    for ev in a.chronicity.evidence:
        parts.append(Text(f"  {_u(ev)}", style="dim"))
    meds = a.possible_causes.get("medications", [])
    conds = a.possible_causes.get("conditions", [])
    if meds or conds:
        parts.append(Text("Possible causes", style="bold underline"))
        for m in meds:
            parts.append(Text(f"  • {m.input} → {m.generic} ({m.drug_class}): {_u(m.why)} [{m.source}]"))
        for c in conds:
            parts.append(Text(f"  • {c.input} → {c.name} ({c.category}, {c.course}): {c.article_wording} "
                              f"[{c.source}]"))
    not_current = a.possible_causes.get("not_current_medications", [])
    if not_current:
        parts.append(Text("Medicines mentioned, not current (not counted as causes)", style="bold underline"))
        for m in not_current:
            parts.append(Text(f"  • {m.input} → {m.generic}: {m.not_current}", style="dim"))
    unlinked = a.possible_causes.get("unlinked_medications", [])
    if unlinked:
        parts.append(Text(f"  No known link to low white cells in leukowatch's tables: {', '.join(unlinked)}",
                          style="dim"))
    for s in a.scores:
        parts.append(Text(f"{s.name}: {_u(s.interpretation)}" + (f" Missing: {_u(', '.join(s.missing))}." if s.missing
                                                            else ""), style="bold"))
    parts.append(Text("In plain words", style="bold underline"))
    for line in a.patient_summary:
        parts.append(Text(f"  {_u(line)}"))
    for title, items in (("Treatment options", a.advice.treatment), ("Home care", a.advice.home_care),
                         ("Contact a doctor", a.advice.contact_doctor)):
        if items:
            parts.append(Text(title, style="bold underline"))
            parts.extend(Text(f"  • {_u(item)}") for item in items)
    for w in a.warnings:
        parts.append(Text(f"warning: {_u(w)}", style="yellow"))
    parts.append(Panel(Text(a.disclaimer), title="Decision support, not a diagnosis", border_style="dim"))
    parts.append(Text(f"profile {a.profile} · {a.criteria} · knowledge {a.knowledge_version}", style="dim"))
    return Group(*parts)


def print_assessment(a: Assessment, console: Console | None = None) -> None:
    (console or Console()).print(render(a))


def print_alert_table(rows: list[dict[str, Any]], version: str, console: Console | None = None) -> None:
    """`leukowatch knowledge alerts`: the escalation table, one block per alert code and variant
    (seven wide columns do not fit a terminal; each block reads top to bottom)."""
    console = console or Console(highlight=False)
    console.print(Text(f"Escalation: alert levels (knowledge/alerts.toml, knowledge {version})", style="bold"))
    for row in rows:
        console.print(Text.assemble(("\n" + row["code"], "bold"), f" / {row['variant']} ",
                                    (f" {row['level'].upper()} ", _LEVEL_STYLE[row["level"]])))
        for col in ("trigger", "clinician", "patient", "source"):
            console.print(Text(f"  {col}: {_u(row[col])}", style="dim" if col == "source" else ""))
