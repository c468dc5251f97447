"""Numbers as the outputs write them, each distinct value formatted once per process.

An assessment writes a few dozen numbers (values, cells per microlitre, percentages), and formatting
a float costs more than any other step of a finding. Lab values repeat (they are reported to 2-3
digits), so the text is kept per value and a repeat is one dictionary lookup. Zero is never kept:
0.0 and -0.0 are one key but print differently. A table stops growing at `_LIMIT` values (a
long-running service meets many); later new values are formatted each time.
"""

from __future__ import annotations

_LIMIT = 16384


class _Texts(dict[float, str]):
    """value -> format(value * scale, spec), filled on first use."""

    def __init__(self, spec: str, scale: float = 1.0) -> None:
        super().__init__()
        self.spec = spec
        self.scale = scale

    def __missing__(self, value: float) -> str:
        text = format(value * self.scale, self.spec)
        if value and len(self) < _LIMIT:
            self[value] = text
        return text


#: f"{value:g}": 2.1 -> "2.1", 34.0 -> "34", 0.714 -> "0.714".
G = _Texts("g")
#: A count in 10^9/L as cells per microlitre, f"{value * 1000:,.0f}": 0.714 -> "714", 140.0 -> "140,000".
PER_UL = _Texts(",.0f", 1000.0)
