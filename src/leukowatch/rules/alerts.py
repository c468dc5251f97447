"""Alerts built from the escalation table (knowledge/alerts.toml), never from sentences in code.

Every alert has a row per variant with its level, trigger, clinician text, patient text and source,
so a reviewer reads what is urgent, and what each reader is told, in one table; the population
engine reads the same rows. The rules decide *which* row fires; this module fills its template.
"""

from __future__ import annotations

from typing import Any

from ..knowledge import derived, load_table, thaw
from ..model import Alert
from ..numtext import PER_UL, G

#: The columns of the escalation table, in the order `leukowatch knowledge alerts` prints them.
COLUMNS: tuple[str, ...] = ("code", "variant", "level", "trigger", "clinician", "patient", "source")


@derived
def _rows() -> dict[tuple[str, str], dict[str, Any]]:
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in load_table("alerts")["alert"]:
        key = (row["code"], row["variant"])
        if key in rows:
            raise ValueError(f"alerts.toml: {row['code']!r} variant {row['variant']!r} is listed twice")
        rows[key] = row
    return rows


def alert_row(code: str, variant: str) -> dict[str, Any]:
    """One row of the escalation table (read-only)."""
    try:
        return _rows()[(code, variant)]
    except KeyError:
        raise KeyError(f"alerts.toml has no row {code!r} / {variant!r}") from None


def alert_rows() -> list[dict[str, Any]]:
    """The whole escalation table in file order (plain dicts): what `leukowatch knowledge alerts` prints."""
    return [thaw(row) for row in _rows().values()]


def make_alert(code: str, variant: str, **values: Any) -> Alert:
    """The Alert of one table row, its clinician and patient templates filled with `values`."""
    row = alert_row(code, variant)
    # Positional, in Alert's field order (code, level, message, rule, source, patient_message, variant).
    return Alert(code, row["level"], row["clinician"].format_map(values), row["trigger"], row["source"],
                 row["patient"].format_map(values), variant)


def verdict_head(code: str, variant: str) -> str | None:
    """The head a critical row puts first in the verdict line (`verdict`), if it has one."""
    return alert_row(code, variant).get("verdict")


@derived
def superseded_by(code: str, variant: str) -> frozenset[str]:
    """Alert codes whose patient text already says this row's, sooner (`patient_superseded_by`)."""
    return frozenset(alert_row(code, variant).get("patient_superseded_by", ()))


@derived
def threshold(code: str, variant: str, key: str) -> float:
    """A numeric trigger of a row (e.g. severe_neutropenia/profound `anc_below`)."""
    return float(alert_row(code, variant)[key])


def urgent_care(chemotherapy: bool) -> str:
    """Where to get urgent care: the cancer care team only when chemotherapy is active."""
    where = load_table("alerts")["where"]
    return where["chemotherapy"] if chemotherapy else where["default"]


@derived(maxsize=1024)
def count_text(label: str, value: float, comparator: str | None) -> str:
    """E.g. "ANC <0.5 ×10⁹/L (<500/µL)": the value as reported, with its comparator on both units.
    Cached: one assessment quotes the same ANC in up to five alerts."""
    sign = comparator or ""
    return f"{label} {sign}{G[value]} ×10⁹/L ({sign}{PER_UL[value]}/µL)"
