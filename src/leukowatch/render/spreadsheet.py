"""CSV cells a spreadsheet will not run.

A CSV of patients or rejects holds text that came from outside (a lab's patient id, a raw result
line). Excel and LibreOffice read a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
return as a formula, so an id such as `=HYPERLINK("http://…")` would become a live link or worse
in the hands of whoever opens the export (CSV injection, OWASP). Such cells get a leading `'`,
which spreadsheets show as text; numbers and everything else are written as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_row(values: Iterable[Any]) -> list[Any]:
    """The row with every text cell that a spreadsheet would read as a formula quoted as text."""
    return ["'" + v if isinstance(v, str) and v.startswith(_FORMULA_STARTS) else v for v in values]
