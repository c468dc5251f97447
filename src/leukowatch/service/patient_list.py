"""The stored-patient list as a person browses it: search, filter, sort, page, export (Datasette-style).

A store of 2,000 persons is one table too long to read, and the question on a ward is "who was
low, how badly". So each row carries what the population screen found for that person (findings
with their worst grade, flags such as chronic or cyclic), the list filters on them (which is where the
population page's counts click through to), sorts on any column and pages. The CSV export is the
same selection, unpaged. Query parameters only: every view is a link, and nothing needs JavaScript.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from ..render.spreadsheet import spreadsheet_row
from .population import PersonFindings

PAGE_SIZE = 50
#: sort key -> column heading
SORTS: dict[str, str] = {"patient": "Patient", "sex": "Sex", "results": "Results", "first": "First",
                         "last": "Last", "findings": "Findings"}
#: Flag names of the screen, as the list and the population page write them.
FLAG_LABELS: dict[str, str] = {
    "neutropenia": "neutropenia", "lymphocytopenia": "lymphocytopenia", "chronic_neutropenia": "chronic",
    "cyclic": "cyclic", "drug_associated": "drug-associated", "febrile_neutropenia": "febrile neutropenia",
    "pancytopenia": "pancytopenia",
}


@dataclass
class Query:
    """The list's state, read from and written back to the query string."""

    q: str = ""
    finding: str = ""
    grade: str = ""  # a grade number, "none" (finding without a grade), or "" (any)
    flag: str = ""
    sort: str = "patient"
    desc: bool = False
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> Query:
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            page = 1
        sort = params.get("sort") or "patient"
        return cls(q=(params.get("q") or "").strip(), finding=params.get("finding") or "",
                   grade=params.get("grade") or "", flag=params.get("flag") or "",
                   sort=sort if sort in SORTS else "patient", desc=params.get("dir") == "desc", page=page)

    def link(self, **change: Any) -> str:
        """The query string of this view with some parameters changed (empty ones dropped)."""
        state = {"q": self.q, "finding": self.finding, "grade": self.grade, "flag": self.flag,
                 "sort": self.sort if self.sort != "patient" else "", "dir": "desc" if self.desc else "",
                 "page": self.page if self.page > 1 else ""} | change
        return urlencode({k: v for k, v in state.items() if v not in ("", None, 1)})

    def sort_link(self, key: str) -> str:
        desc = not self.desc if key == self.sort else key in ("results", "last", "findings")
        return self.link(sort=key, dir="desc" if desc else "", page="")

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.finding or self.flag)


@dataclass
class Row:
    patient_id: str
    sex: str
    n_observations: int
    first: datetime | date | None
    last: datetime | date | None
    found: PersonFindings | None

    @property
    def first_day(self) -> str:
        return _iso(self.first)[:10]

    @property
    def last_day(self) -> str:
        return _iso(self.last)[:10]

    @property
    def findings(self) -> list[str]:
        """'neutropenia G4', 'leukopenia G2', then flags: the findings column."""
        if self.found is None:
            return []
        out = []
        def rank(name: str) -> tuple[int, str]:
            worst = self.found.worst(name)
            return (-(worst if worst is not None else -1), name)

        for name in sorted(self.found.grades, key=rank):
            worst = self.found.worst(name)
            out.append(name + (f" G{worst}" if worst is not None else ""))
        out += [FLAG_LABELS.get(f, f) for f in self.found.flags if f not in self.found.grades]
        return out


def rows_of(patients: list[dict[str, Any]], found: dict[str, PersonFindings]) -> list[Row]:
    return [Row(p["patient_id"], p["sex"], p["n_observations"], p["first"], p["last"], found.get(p["patient_id"]))
            for p in patients]


def _matches(row: Row, query: Query) -> bool:
    if query.q and query.q.lower() not in f"{row.patient_id} {' '.join(row.findings)}".lower():
        return False
    if query.flag and (row.found is None or query.flag not in row.found.flags):
        return False
    if query.finding:
        grades = row.found.grades.get(query.finding) if row.found else None
        if not grades:
            return False
        if query.grade == "none":
            return None in grades
        if query.grade:
            return any(g is not None and str(g) == query.grade for g in grades)
    return True


def _key(row: Row, sort: str) -> tuple:
    value = {"patient": row.patient_id, "sex": row.sex, "results": row.n_observations,
             "first": row.first, "last": row.last,
             "findings": row.found.worst_any if row.found else -2}[sort]
    return (value is None, value if value is not None else 0, row.patient_id)


def select(rows: list[Row], query: Query) -> list[Row]:
    """The rows the query keeps, in its order (missing values last either way)."""
    kept = [r for r in rows if _matches(r, query)]
    present = sorted((r for r in kept if _key(r, query.sort)[0] is False), key=lambda r: _key(r, query.sort),
                     reverse=query.desc)
    return present + [r for r in kept if _key(r, query.sort)[0] is True]


def page_of(rows: list[Row], page: int, size: int = PAGE_SIZE) -> tuple[list[Row], int, int]:
    """(rows of that page, the page actually shown, number of pages)."""
    pages = max(1, -(-len(rows) // size))
    page = min(page, pages)
    return rows[(page - 1) * size: page * size], page, pages


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, (date, datetime)) else ""


def csv_text(rows: list[Row]) -> str:
    """The selection as CSV: one row per person, findings joined with '; '."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["patient_id", "sex", "results", "first", "last", "findings"])
    for r in rows:
        w.writerow(spreadsheet_row([r.patient_id, r.sex, r.n_observations, _iso(r.first), _iso(r.last),
                                    "; ".join(r.findings)]))
    return out.getvalue()
