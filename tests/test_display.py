"""Page text: one unit notation, cells per microlitre for patients, sources as links without internal notes."""

from __future__ import annotations

from leukowatch.render.display import clean_source, patient_units, readable_units, source_html


def test_every_unit_spelling_reads_one_way() -> None:
    text = "ANC 0.42 x10^9/L (420/uL); WBC 2.1 10^9/L; 10*9/L; 5.9 10^12/L; 3.1 x10^3/uL; 900 cells/uL; 4 K/uL"
    assert readable_units(text) == ("ANC 0.42 ×10⁹/L (420/µL); WBC 2.1 ×10⁹/L; ×10⁹/L; 5.9 ×10¹²/L; 3.1 ×10³/µL; "
                                    "900 cells/µL; 4 K/µL")
    assert readable_units(readable_units(text)) == readable_units(text)  # idempotent: safe to apply twice


def test_patients_read_cells_per_microlitre() -> None:
    assert patient_units("the lowest was 0.30 x10^9/L (300 cells/µL)") == (
        "the lowest was 0.30 ×10⁹/L (300 cells per microlitre)")
    assert patient_units("ANC 1,500/uL") == "ANC 1,500 cells per microlitre"


def test_sources_become_links_and_internal_notes_go() -> None:
    html = source_html("NCI CTCAE v5.0 (2017); IDSA 2010 febrile neutropenia guideline (Freifeld, Clin Infect Dis "
                       "2011;52:e56); NICE CG151; population screen window 90 days (issue 5)")
    assert '<a href="https://ctep.cancer.gov/protocoldevelopment/electronic_applications/ctc.htm"' in html
    assert '<a href="https://doi.org/10.1093/cid/cir073"' in html
    assert '<a href="https://www.nice.org.uk/guidance/cg151"' in html
    assert "issue 5" not in html
    assert clean_source("DESIGN.md contract example; MSD Manual") == "MSD Manual"
    assert source_html("<script>x</script> WHOLE") == "&lt;script&gt;x&lt;/script&gt; WHOLE"  # escaped, no false link
