"""The printable report: PDF (checked with pypdf and pdftoppm) and self-contained HTML."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import history_cases as hc
import pytest
from pypdf import PdfReader

from leukowatch.assess import assess
from leukowatch.cli import main
from leukowatch.history import build_history
from leukowatch.io.store import open_store, store_request
from leukowatch.render.plots import history_png
from leukowatch.render.report import render_html


@pytest.fixture(scope="module")
def two_year_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("report") / "lw.duckdb"
    con = open_store(db)
    try:
        store_request(con, hc.two_years(), source="two-years")
        store_request(con, {**hc.clozapine(), "patient": {"id": "c1", "sex": "male", "age_years": 40}}, "cloz")
    finally:
        con.close()
    return str(db)


def test_pdf_report_has_the_verdict_first_and_the_plot(two_year_db: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.pdf"
    assert main(["report", "h1", "--db", two_year_db, "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    reader = PdfReader(str(out))
    first = reader.pages[0]
    text = re.sub(r"\s+", " ", first.extract_text())
    assert text.index("Verdict") < text.index("Your latest white-cell counts are not low")
    assert "200 blood counts over 729 days" in text
    images = list(first.images)
    assert images, "the plot is on page 1"
    assert images[0].image.width >= 900 and images[0].image.height >= 500
    whole = " ".join(re.sub(r"\s+", " ", p.extract_text()) for p in reader.pages)
    for section in ("Timeline", "Findings at the latest result", "Possible causes", "What to do", "Disclaimer"):
        assert section in whole
    assert "Decision support, not a diagnosis" in whole
    assert "Chemotherapy nadir pattern: consistent" in whole
    assert "positive dechallenge" in whole


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (pdftoppm) not installed")
def test_pdf_page_renders_with_the_plot_colours(two_year_db: str, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = tmp_path / "report.pdf"
    assert main(["report", "c1", "--db", two_year_db, "-o", str(out)]) == 0
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(out), str(tmp_path / "page")],
                   check=True, timeout=60)
    (png,) = tmp_path.glob("page*.png")
    pixels = (imread(png)[:, :, :3] * 255).round().astype(int)
    # ANC line (#D55E00) and WBC line (#0072B2) are drawn on the rendered page.
    for rgb in ((0xD5, 0x5E, 0x00), (0x00, 0x72, 0xB2)):
        near = (abs(pixels - rgb).sum(axis=2) < 60).sum()
        assert near > 50, rgb


def test_html_report_is_self_contained(two_year_db: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(["report", "c1", "--db", two_year_db, "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.index("Verdict") < page.index("data:image/png;base64,") < page.index("Disclaimer")
    assert "Your latest white-cell counts are not low" in page
    assert "clozapine" in page and "19-60 days" in page
    assert not re.search(r"(src|href)=\"https?://", page)


def test_report_rejects_unknown_suffix(two_year_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "c1", "--db", two_year_db, "-o", str(tmp_path / "r.docx")]) == 2
    assert "-o" in capsys.readouterr().err


def test_plot_png_and_headline_for_a_low_latest_count() -> None:
    req = hc.lows_at([0, 6, 13], normal_weeks=[3, 9])
    h = build_history(req)
    assert history_png(h, dpi=60).startswith(b"\x89PNG")
    page = render_html(h, assess(req))
    assert ("Your latest blood count shows neutropenia (low ANC), and it has been low for at least three "
            "months (chronic).") in page


def test_pdf_writes_a_character_its_font_lacks_as_its_code_point(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A patient id in CJK ideographs printed blank (DejaVu Sans has no such glyphs): a wrong-patient risk on
    paper. The PDF writes each missing character as its code point; the HTML keeps the characters."""
    db = tmp_path / "lw.duckdb"
    con = open_store(db)
    try:
        store_request(con, {**hc.clozapine(), "patient": {"id": "患者-7", "sex": "male", "age_years": 40}}, "cjk")
    finally:
        con.close()
    out = tmp_path / "report.pdf"
    assert main(["report", "患者-7", "--db", str(db), "-o", str(out)]) == 0
    capsys.readouterr()
    text = " ".join(p.extract_text() for p in PdfReader(str(out)).pages)
    assert "[U+60A3][U+8005]-7" in text
    html_out = tmp_path / "report.html"
    assert main(["report", "患者-7", "--db", str(db), "-o", str(html_out)]) == 0
    assert "患者-7" in html_out.read_text(encoding="utf-8")
