"""Text as a person reads it on a page or a printed report: one unit notation and sources as links.

The rules write units the way a terminal and a log can carry them (`x10^9/L`, `10^9/L`, `/uL`); a
page shows them one way only: ×10⁹/L and /µL for clinicians, "cells per microlitre" (the article's
words) in text meant for patients. Sources are written as citations in the knowledge tables; where a
public page exists (CTCAE, the IDSA and NICE guidelines, the cited papers; the addresses are those of
docs/clinical-reference.md §15) the citation becomes a link. The article is linked to its site:
its own address is not in the project's reference. Project-internal notes ("issue 5") are not sources a reader can follow, so they are dropped
from what is shown.
"""

from __future__ import annotations

import re
from html import escape

_UNITS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:[x×]\s?)?10\s?[\^*]\s?9\s?/\s?L"), "×10⁹/L"),
    (re.compile(r"(?:[x×]\s?)?10\s?[\^*]\s?12\s?/\s?L"), "×10¹²/L"),
    (re.compile(r"(?:[x×]\s?)?10\s?[\^*]\s?3\s?/\s?uL"), "×10³/µL"),
    (re.compile(r"(?<=[/\s{}(])uL\b"), "µL"),
    (re.compile(r"/mm3\b"), "/mm³"),
)
_PATIENT_PER_UL = re.compile(r"(\d[\d,.]*)\s?(?:cells\s?)?/\s?µL")

#: Citations with a public page, matched in a source text (first match per pattern becomes a link).
SOURCE_LINKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?:NCI )?(?:Common Terminology Criteria for Adverse Events|CTCAE)(?: v[56]\.0)?"),
     "https://ctep.cancer.gov/protocoldevelopment/electronic_applications/ctc.htm"),
    (re.compile(r"IDSA(?: 2010)?(?: febrile neutropenia guideline)?|Freifeld[^)]*?52:e56"),
     "https://doi.org/10.1093/cid/cir073"),
    (re.compile(r"NICE CG151"), "https://www.nice.org.uk/guidance/cg151"),
    (re.compile(r"Andersohn[^)]*?146:657"), "https://doi.org/10.7326/0003-4819-146-9-200705010-00009"),
    (re.compile(r"MASCC(?: risk index)?|Klastersky[^;)]*?3038"), "https://doi.org/10.1200/JCO.2000.18.16.3038"),
    (re.compile(r"CISNE(?: score)?|Carmona-Bayonas[^)]*?33:465"), "https://doi.org/10.1200/JCO.2014.57.2347"),
    (re.compile(r"DAIDS(?: v?2\.1)?"), "https://rsc.niaid.nih.gov/sites/default/files/daidsgradingcorrectedv21.pdf"),
    (re.compile(r"Merz[^);]*?(?:JAMA )?2023(?:;329:2088)?"), "https://doi.org/10.1001/jama.2023.7467"),
    (re.compile(r"ASCO 2015(?: G-CSF guideline)?|Smith TJ[^)]*?33:3199"), "https://doi.org/10.1200/JCO.2015.62.3488"),
    (re.compile(r"Abidi[^)]*?R59"), "https://doi.org/10.1186/cc6883"),
    (re.compile(r"\bEHA\b(?: 2023)?(?: guideline)?"), "https://doi.org/10.1097/HS9.0000000000000872"),
    (re.compile(r"MedlinePlus"), "https://medlineplus.gov/ency/article/003657.htm"),
    (re.compile(r"MSD Manual"), "https://www.msdmanuals.com/professional/hematology-and-oncology/leukopenias/lymphocytopenia"),
    (re.compile(r"\bWHO\b(?: 2011)?"), "https://www.who.int/publications/i/item/WHO-NMH-NHD-MNM-11.1"),
    (re.compile(r"prescribing information"), "https://dailymed.nlm.nih.gov"),
    (re.compile(r"Medical News Today"), "https://www.medicalnewstoday.com"),
    (re.compile(r"LOINC"), "https://loinc.org/"),
)
_INTERNAL = (re.compile(r"[;,]?\s*\(?\bissue \d+\)?"), re.compile(r"[;,]?\s*\(?DESIGN\.md[^;)]*\)?"))


def readable_units(text: object) -> str:
    """One unit notation for pages: '2.1 x10^9/L (2,100/uL)' -> '2.1 ×10⁹/L (2,100/µL)'."""
    out = "" if text is None else str(text)
    for pattern, unit in _UNITS:
        out = pattern.sub(unit, out)
    return out


def patient_units(text: object) -> str:
    """Units in text meant for patients: cells per microlitre, as the article speaks."""
    return _PATIENT_PER_UL.sub(r"\1 cells per microlitre", readable_units(text))


def clean_source(text: object) -> str:
    """The citation without project-internal notes."""
    out = "" if text is None else str(text)
    for pattern in _INTERNAL:
        out = pattern.sub("", out)
    return out.strip(" ;,")


def source_html(text: object) -> str:
    """A citation as HTML (escaped), each known public source a link."""
    source = readable_units(clean_source(text))
    spans: list[tuple[int, int, str]] = []
    for pattern, url in SOURCE_LINKS:
        m = pattern.search(source)
        if m and not any(s < m.end() and m.start() < e for s, e, _ in spans):
            spans.append((m.start(), m.end(), url))
    out, pos = [], 0
    for start, end, url in sorted(spans):
        out.append(escape(source[pos:start]))
        out.append(f'<a href="{url}" rel="noopener">{escape(source[start:end])}</a>')
        pos = end
    out.append(escape(source[pos:]))
    return "".join(out)
