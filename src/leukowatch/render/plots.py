"""The history plot: WBC, ANC and lymphocytes over time, with grades, ranges and treatments under it.

Log scale, because the counts that matter span two decades (an ANC of 0.1 and a WBC of 10 must both
be readable). The CTCAE neutrophil grade bands and the ANC reference range come from the knowledge
tables and the draws themselves (a lab's range can change over two years, so the range is drawn as a
step line, not one constant). Medicines and chemotherapy doses sit in a strip underneath on the same
time axis, so a fall 6 weeks after a start, or 10 days after each dose, can be seen at a glance.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display, no network).
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from ..history import History
from ..rules.grading import criteria_rows
from ..vocabulary import analyte as analyte_words

#: Series drawn, with colour (colour-blind-safe Okabe-Ito palette); labels from the vocabulary.
PLOTTED: tuple[tuple[str, str], ...] = (
    ("wbc", "#0072B2"),
    ("neutrophils", "#D55E00"),
    ("lymphocytes", "#009E73"),
)
_GRADE_COLOURS = {1: "#fffbe0", 2: "#fff0c4", 3: "#ffe0c8", 4: "#ffd2d2"}
_LINKED_COLOUR, _OTHER_COLOUR, _CHEMO_COLOUR = "#CC79A7", "#999999", "#56B4E9"


def _grade_bands(h: History, lln: float | None) -> list[tuple[int, float, float]]:
    """(grade, lower, upper) for the ANC grade bands of the history's criteria."""
    bands = []
    for row in criteria_rows(h.criteria_version, "neutrophils", "low"):
        upper = lln if row["below"] == "LLN" else float(row["below"])
        if upper is None:
            continue
        lower = float(row.get("at_least", 0))
        if upper <= lower:  # the LLN sits on the next cut-off: grade 1 is empty for this range
            continue
        bands.append((int(row["grade"]), lower, upper))
    return bands


def _treatment_rows(h: History, end: datetime) -> list[tuple[str, list[tuple[float, float]], str]]:
    rows: list[tuple[str, list[tuple[float, float]], str]] = []
    tz = end.tzinfo
    for m in h.medications:
        if m.start is None:
            continue
        start = datetime(m.start.year, m.start.month, m.start.day, tzinfo=tz)
        stop = datetime(m.stop.year, m.stop.month, m.stop.day, tzinfo=tz) if m.stop else end
        x0 = date2num(start)
        label = m.name if len(m.name) <= 28 else m.name[:27] + "…"
        rows.append((label, [(x0, max(date2num(stop) - x0, 1.0))],
                     _LINKED_COLOUR if m.name in h.medication_links else _OTHER_COLOUR))
    if h.chemotherapy_doses:
        doses = [(date2num(datetime(d.year, d.month, d.day, tzinfo=tz)), 1.5) for d in h.chemotherapy_doses]
        rows.append(("chemotherapy doses", doses, _CHEMO_COLOUR))
    return rows


def history_figure(h: History) -> Figure:
    """The figure for one history (A4-width; stays readable with hundreds of results)."""
    series = {a: h.series[a] for a, _ in PLOTTED if a in h.series}
    last = h.last or datetime.now()
    rows = _treatment_rows(h, last)
    strip = max(len(rows), 1)
    fig = Figure(figsize=(7.6, 4.2 + 0.28 * strip), dpi=100, layout="constrained")
    gs = fig.add_gridspec(2, 1, height_ratios=[4.0, 0.5 + 0.3 * strip])
    ax = fig.add_subplot(gs[0])
    bars = fig.add_subplot(gs[1], sharex=ax)
    values = [p.value for s in series.values() for p in s]
    positive = [v for v in values if v > 0]
    floor = min(positive) / 2 if positive else 0.05
    bottom = min(floor, 0.05)
    top = max(values + [12.0]) * 1.5
    anc = series.get("neutrophils", [])
    lln = anc[-1].ref_low if anc else None
    for g, lower, upper in _grade_bands(h, lln):
        ax.axhspan(max(lower, bottom), upper, color=_GRADE_COLOURS.get(g, "#eeeeee"), zorder=0, lw=0)
        mid = (max(lower, bottom) * upper) ** 0.5
        ax.text(1.005, mid, f"G{g}", transform=ax.get_yaxis_transform(), fontsize=7, va="center", color="#7a4a00")
    dense = max((len(s) for s in series.values()), default=0) > 80
    for analyte, colour in PLOTTED:
        s = series.get(analyte)
        if not s:
            continue
        times = [p.time for p in s]
        vals = [max(p.value, bottom) for p in s]
        ax.plot(times, vals, color=colour, lw=0.9 if dense else 1.3, marker="o", ms=2.2 if dense else 3.5,
                label=analyte_words(analyte).label, zorder=3)
        lows = [(p.time, max(p.value, bottom)) for p in s if p.low]
        if lows:
            ax.plot([t for t, _ in lows], [v for _, v in lows], ls="none", marker="o", ms=3 if dense else 5,
                    mfc="none", mec="#000000", mew=0.6, zorder=4)
    for analyte, label, colour, style in (("neutrophils", "ANC reference range", "#D55E00", "--"),
                                           ("wbc", "WBC reference range", "#0072B2", ":")):
        s = series.get(analyte)
        if not s:
            continue
        times = [p.time for p in s] + [s[-1].time + timedelta(days=1)]
        for attr, lab in (("ref_low", label), ("ref_high", None)):
            ys = [getattr(p, attr) for p in s]
            if all(y is not None for y in ys):
                ax.step(times, ys + ys[-1:], where="post", color=colour, ls=style, lw=0.9, label=lab, zorder=2)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_ylabel("count, ×10⁹/L (log scale)")
    ax.grid(True, which="major", axis="y", color="#dddddd", lw=0.5)
    if ax.get_legend_handles_labels()[0]:  # a one-off result without a date has no series to name
        ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.85)
    ax.set_title(f"Blood counts ({h.n_draws} draws). Shaded: {h.criteria} neutrophil grades; circled: low",
                 fontsize=9, loc="left")
    ax.tick_params(labelbottom=False)
    for i, (label, spans, colour) in enumerate(rows):
        bars.broken_barh(spans, (i - 0.35, 0.7), color=colour)
        bars.text(spans[0][0], i, f" {label}", va="center", ha="left", fontsize=7, clip_on=True)
    bars.set_ylim(-0.6, strip - 0.4)
    bars.set_yticks([])
    bars.invert_yaxis()
    bars.set_ylabel("treatment", fontsize=8)
    if not rows:
        bars.text(0.5, 0.5, "no medicines or chemotherapy with dates", transform=bars.transAxes,
                  ha="center", va="center", fontsize=7, color="#666666")
    locator = AutoDateLocator(minticks=4, maxticks=10)
    bars.xaxis.set_major_locator(locator)
    bars.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    bars.tick_params(labelsize=7)
    ax.tick_params(labelsize=7)
    if h.first is not None and h.last is not None:
        pad = max((h.last - h.first) / 40, timedelta(days=2))
        starts = [date2num(h.first - pad)] + [sp[0][0] for _, sp, _ in rows]
        bars.set_xlim(min(starts), date2num(h.last + pad))
    return fig


def history_png(h: History, dpi: int = 150) -> bytes:
    """The plot as PNG bytes (embedded in the HTML and the PDF report)."""
    fig = history_figure(h)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
