"""The printable patient report, as self-contained HTML or as PDF, from a History and an Assessment.

Both formats are drawn from one list of blocks (`report_blocks`), so the HTML and the PDF always say
the same things in the same order: the verdict in plain language first, then the plot, the
timeline (episodes, chronic or acute with its evidence, cyclic suspicion, chemotherapy cycles, drug
timing), the latest findings with their sources, possible causes, the article's advice and the
disclaimer. Nothing is fetched from the internet: the plot is an embedded PNG, the HTML carries its
own CSS, and the PDF embeds the DejaVu fonts that ship with matplotlib (so µ, ≥ and – print).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..history import History
from ..model import Assessment
from ..rules.findings import graded_within_range
from ..vocabulary import finding, low_white
from .display import readable_units
from .plots import history_png


@dataclass
class Block:
    """One piece of the report: kind is h1 | h2 | p | lead | ul | table | img | small."""

    kind: str
    text: str = ""
    items: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)  # first row is the header
    data: bytes = b""


def _d(t: datetime | None) -> str:
    return t.date().isoformat() if t else "–"


def _episode_rows(h: History) -> list[list[str]]:
    rows = [["finding", "onset", "nadir", "worst grade", "low results", "days", "recovered"]]
    for code, eps in h.episodes.items():
        for e in eps:
            rows.append([finding(code).label, _d(e.onset), f"{e.nadir_value:.2f} on {_d(e.nadir_time)}",
                         "–" if e.worst_grade is None else f"G{e.worst_grade}", str(e.n_low), str(e.duration_days),
                         _d(e.recovery) if e.recovery else "not yet"])
    return rows


def _timeline_blocks(h: History) -> list[Block]:
    out = [Block("h2", "Timeline")]
    if len(_episode_rows(h)) > 1:
        out.append(Block("table", rows=_episode_rows(h)))
    else:
        out.append(Block("p", "No episodes of low counts."))
    chron = [f"{a}: {c.status.upper()} — " + "; ".join(c.evidence) for a, c in h.chronicity_by_analyte.items()]
    if not chron:
        chron = [f"{h.chronicity.status.upper()}: " + "; ".join(h.chronicity.evidence)]
    out += [Block("p", "<b>Acute or chronic.</b>"), Block("ul", items=[html.escape(x) for x in chron])]
    if h.cyclic is not None:
        c = h.cyclic
        head = f"<b>Cyclic neutropenia: {c.status.replace('_', ' ')}</b>"
        if c.period_days is not None:
            head += f" — strongest rhythm {c.period_days:.1f} days"
        out += [Block("p", head), Block("ul", items=[html.escape(x) for x in c.evidence]),
                Block("small", html.escape(f"Method: {c.method}"))]
    if h.chemotherapy is not None and h.chemotherapy.status != "no_chemotherapy":
        ch = h.chemotherapy
        out.append(Block("p", f"<b>Chemotherapy nadir pattern: {ch.status.replace('_', ' ')}</b>"))
        rows = [["dose", "results", "nadir", "nadir day", "recovered day", "reading"]]
        rows += [[cy.dose_date.isoformat(), str(cy.n_results),
                  "–" if cy.nadir_value is None else f"{cy.nadir_value:.2f}",
                  "–" if cy.nadir_day is None else str(cy.nadir_day),
                  "–" if cy.recovery_day is None else str(cy.recovery_day), cy.status.replace("_", " ")]
                 for cy in ch.cycles]
        out += [Block("table", rows=rows), Block("small", html.escape(f"Source: {ch.source}"))]
    hints = [html.escape(t.hint) for t in h.drug_timing]
    if hints:
        out += [Block("p", "<b>Medicine timing (a hint for the clinician, not a verdict).</b>"),
                Block("ul", items=hints)]
        out.append(Block("small", html.escape(f"Source: {h.drug_timing[0].source}")))
    return out


def _finding_blocks(a: Assessment) -> list[Block]:
    out = [Block("h2", "Findings at the latest result")]
    if not a.findings:
        out.append(Block("p", "No findings: the latest counts are within the ranges used."))
    for f in a.findings:
        grade = f"{f.criteria} grade {f.grade}" if f.grade is not None else "not graded"
        sev = f", {f.severity}" if f.severity else ""
        out.append(Block("p", f"<b>{html.escape(f.code)}</b>: {f.value:g} {f.unit} — {grade}{sev}"))
        items = [f"threshold: {f.threshold}", f"rule: {f.rule}", f"source: {f.source}", *f.notes]
        out.append(Block("ul", items=[html.escape(i) for i in items]))
    for al in a.alerts:
        out.append(Block("p", f"<b>{al.level.upper()}</b> {html.escape(al.message)}"))
    return out


def _cause_blocks(a: Assessment) -> list[Block]:
    meds = a.possible_causes.get("medications", [])
    conds = a.possible_causes.get("conditions", [])
    items = [f"{m.input} → {m.generic} ({m.drug_class}): {m.why} [source: {m.source}]" for m in meds]
    items += [f"{c.input} → {c.name} ({c.category}, {c.course}): {c.article_wording} [source: {c.source}]"
              for c in conds]
    unlinked = a.possible_causes.get("unlinked_medications", [])
    if unlinked:
        items.append("No known link to low white cells in leukowatch's tables: " + ", ".join(unlinked))
    if not items:
        items = ["No listed medicine or condition is linked to low white cells."]
    return [Block("h2", "Possible causes"), Block("ul", items=[html.escape(i) for i in items])]


def _advice_blocks(a: Assessment) -> list[Block]:
    out = [Block("h2", "What to do")]
    for title, items in (("Treatment options", a.advice.treatment), ("Home care", a.advice.home_care),
                         ("When to contact a doctor", a.advice.contact_doctor)):
        if items:
            out += [Block("p", f"<b>{title}</b>"), Block("ul", items=[html.escape(i) for i in items])]
    return out


def report_blocks(h: History, a: Assessment, png: bytes | None = None) -> list[Block]:
    """The report's content, in reading order (shared by the HTML and PDF renderers)."""
    who = f"patient {html.escape(h.patient.id)}" if h.patient.id else "patient"
    plain = [html.escape(x) for x in a.patient_summary]
    plain += [html.escape(x) for x in h.verdict if not x.startswith("For your clinician")]
    blocks = [
        Block("h1", f"leukowatch report — {who}"),
        Block("small", f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · profile {h.profile} · {a.criteria} · "
                       f"knowledge {a.knowledge_version}"),
        Block("h2", "Verdict"),
        Block("lead", html.escape(_headline(h, a))),
        Block("ul", items=plain),
        Block("p", f"<b>For clinicians (latest result):</b> {html.escape(a.verdict)}"),
        Block("img", text="WBC, ANC and lymphocytes over time", data=png if png is not None else history_png(h)),
    ]
    blocks += _timeline_blocks(h) + _finding_blocks(a) + _cause_blocks(a) + _advice_blocks(a)
    blocks += [Block("h2", "Disclaimer"), Block("p", html.escape(a.disclaimer))]
    return [_readable(b) for b in blocks]


def _readable(b: Block) -> Block:
    """One unit notation on paper, as on the pages (×10⁹/L, /µL)."""
    return Block(b.kind, readable_units(b.text), [readable_units(i) for i in b.items],
                 [[readable_units(c) for c in row] for row in b.rows], b.data)


def _headline(h: History, a: Assessment) -> str:
    """One plain sentence: is it low now, and is it new or long-standing."""
    fn = a.alert("febrile_neutropenia")
    if fn is not None:  # the alert's own patient text (alerts.toml), not a second wording of it
        return fn.patient_message
    # a DAIDS grade given within the range (rules.findings.graded_within_range) is no low count
    low_now = [f for f in a.findings if f.code in low_white() and not graded_within_range(f, a.counts)]
    if low_now:
        names = " and ".join(finding(f.code).name for f in low_now)
        course = {"chronic": ", and it has been low for at least three months (chronic)",
                  "acute": ", which is recent (acute)"}.get(h.chronicity.status, "")
        return f"Your latest blood count shows {names}{course}."
    if h.episodes:
        return (f"Your latest white-cell counts are not low; earlier results were low "
                f"({sum(len(e) for e in h.episodes.values())} episode(s) in {h.n_draws} results).")
    return f"Your white-cell counts are not low in any of the {h.n_draws} results."


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:52rem;margin:2rem auto;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;border-bottom:1px solid #ccc;margin-top:1.6rem}
.lead{font-size:1.2rem;font-weight:600;background:#f3f6fb;border-left:4px solid #0072B2;padding:.6rem .8rem}
.small{font-size:.8rem;color:#555} img{width:100%;height:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;width:100%} th,td{border:1px solid #ccc;padding:.2rem .4rem;
text-align:left} th{background:#f0f0f0}
@media print{body{margin:0;max-width:none} h2{break-after:avoid} img,table{break-inside:avoid}}
"""


def render_html(h: History, a: Assessment, png: bytes | None = None) -> str:
    """A single self-contained HTML page (inline CSS, plot as a data: URI)."""
    import base64

    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>leukowatch report</title><style>{_CSS}</style></head><body>"]
    for b in report_blocks(h, a, png):
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{b.text}</{b.kind}>")
        elif b.kind in ("p", "lead", "small"):
            parts.append(f'<p class="{b.kind}">{b.text}</p>')
        elif b.kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head, *body = b.rows
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</table>")
        elif b.kind == "img":
            data = base64.b64encode(b.data).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                         f"<figcaption class=\"small\">{html.escape(b.text)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# PDF


def _fonts() -> tuple[str, str]:
    """Register DejaVu Sans (bundled with matplotlib) so the PDF needs no system or web fonts."""
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVuSans" not in pdfmetrics.getRegisteredFontNames():
        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(ttf / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(ttf / "DejaVuSans-Bold.ttf")))
        addMapping("DejaVuSans", 0, 0, "DejaVuSans")
        addMapping("DejaVuSans", 1, 0, "DejaVuSans-Bold")
        addMapping("DejaVuSans", 0, 1, "DejaVuSans")
        addMapping("DejaVuSans", 1, 1, "DejaVuSans-Bold")
    return "DejaVuSans", "DejaVuSans-Bold"


def _printable(font: str) -> Callable[[str], str]:
    """A function that writes each character `font` has no glyph for as its code point ("[U+60A3]").

    The PDF embeds DejaVu Sans, which has no CJK ideographs and no emoji: such a character printed blank,
    so a patient id of three ideographs came out empty on paper, a wrong-patient risk. A code point is
    unambiguous and survives printing; the HTML report shows the characters themselves."""
    from reportlab.pdfbase import pdfmetrics

    has = pdfmetrics.getFont(font).face.charToGlyph

    def printable(text: str) -> str:
        return "".join(c if c.isascii() or ord(c) in has else f"[U+{ord(c):04X}]" for c in text)
    return printable


def render_pdf(h: History, a: Assessment, png: bytes | None = None) -> bytes:
    """The report as an A4 PDF (reportlab platypus; long tables split across pages)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import cm
    from reportlab.platypus import (
        Image,
        ListFlowable,
        ListItem,
        LongTable,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
    )
    from reportlab.platypus import TableStyle as TS

    regular, bold = _fonts()
    printable = _printable(regular)  # the bold face covers the same characters
    base = ParagraphStyle("base", fontName=regular, fontSize=9.5, leading=12.5)
    styles: dict[str, Any] = {
        "h1": ParagraphStyle("h1", parent=base, fontName=bold, fontSize=16, leading=20, spaceAfter=2),
        "h2": ParagraphStyle("h2", parent=base, fontName=bold, fontSize=12, leading=15, spaceBefore=10,
                             spaceAfter=4, textColor=colors.HexColor("#0b3d66")),
        "p": ParagraphStyle("p", parent=base, spaceAfter=3),
        "lead": ParagraphStyle("lead", parent=base, fontName=bold, fontSize=12, leading=15, spaceAfter=4,
                               backColor=colors.HexColor("#f3f6fb"), borderPadding=5),
        "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#555555")),
        "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10),
    }
    width = A4[0] - 3.6 * cm
    story: list[Any] = []
    for b in report_blocks(h, a, png):
        if b.kind in styles:
            story.append(Paragraph(printable(b.text), styles[b.kind]))
            if b.kind == "lead":
                story.append(Spacer(1, 4))
        elif b.kind == "ul":
            story.append(ListFlowable([ListItem(Paragraph(printable(i), styles["p"]), leftIndent=10) for i in b.items],
                                      bulletType="bullet", start="•", leftIndent=10, bulletFontName=regular))
        elif b.kind == "table":
            data = [[Paragraph(printable(html.escape(c)), styles["cell"]) for c in r] for r in b.rows]
            t = LongTable(data, repeatRows=1, hAlign="LEFT")
            t.setStyle(TS([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
            story.append(t)
        elif b.kind == "img":
            img = Image(io.BytesIO(b.data))
            scale = width / img.imageWidth
            img.drawWidth, img.drawHeight = width, img.imageHeight * scale
            story.append(img)
    buf = io.BytesIO()
    who = printable(h.patient.id or "patient")
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=1.8 * cm, rightMargin=1.8 * cm, topMargin=1.5 * cm,
                            bottomMargin=1.5 * cm, title=f"leukowatch report {who}", author="leukowatch")
    doc.build(story)
    return buf.getvalue()


def write_report(h: History, a: Assessment, path: str | Path) -> Path:
    """Write HTML or PDF by the file's suffix (.html/.htm or .pdf)."""
    out = Path(path)
    suffix = out.suffix.lower()
    png = history_png(h)
    if suffix == ".pdf":
        out.write_bytes(render_pdf(h, a, png))
    elif suffix in (".html", ".htm"):
        out.write_text(render_html(h, a, png), encoding="utf-8")
    else:
        from ..model import InputError

        raise InputError("-o", f"unknown report format {suffix or '(none)'}: use .html or .pdf")
    return out


# ---------------------------------------------------------------------------------------------
# Terminal text (`leukowatch history`)


def _plain(text: str) -> str:
    return html.unescape(text.replace("<b>", "").replace("</b>", ""))


def history_text(h: History) -> str:
    """The timeline as plain text: verdict lines, then the same timeline blocks the report shows."""
    lines = [f"leukowatch history — {h.patient.id or 'patient'} · profile {h.profile} · {h.criteria}", ""]
    lines += [f"* {v}" for v in h.verdict]
    for b in _timeline_blocks(h):
        if b.kind == "h2":
            lines += ["", b.text.upper()]
        elif b.kind in ("p", "small"):
            lines.append(_plain(b.text))
        elif b.kind == "ul":
            lines += [f"  - {_plain(i)}" for i in b.items]
        elif b.kind == "table":
            widths = [max(len(r[i]) for r in b.rows) for i in range(len(b.rows[0]))]
            for n, r in enumerate(b.rows):
                lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
                if n == 0:
                    lines.append("  " + "  ".join("-" * w for w in widths))
    return readable_units("\n".join(lines))  # the one notation people read, as on the pages
