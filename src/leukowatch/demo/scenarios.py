"""The demo population's scenarios: who they are, what a clinician would say about them, and the
value bands the generator draws from.

Truth is the scenario's *intent* (what a clinician would conclude), not what leukowatch's rules
compute. So that intent and rules cannot honestly disagree, every band below sits clearly on one
side of the `standard` profile's limits (knowledge/profiles.toml) and, for Duffy-null adults, of
the `duffy_null` profile's limits; the margins are stated next to each band. These numbers are
*design values of synthetic data*, not clinical thresholds: no rule reads them.

Bands, in 10^9/L unless stated. Every low band ends below 1.21, the Duffy-null ANC limit, because
Duffy-null persons take part in every scenario:
| band              | range        | clear of                                                        |
|-------------------|--------------|-----------------------------------------------------------------|
| ANC normal        | 2.5-6.8      | LLN 1.5 (standard), ULN 7.5                                     |
| ANC low (episode) | 0.30-1.15    | 1.5 (standard) and 1.21 (Duffy-null DANC); at least 0.3 so not below 0.2  |
| ANC viral onset   | 1.00-1.15    | low for everyone; at least 1.0 so a fever then is not febrile neutropenia |
| ANC under G-CSF   | 0.80-1.15    | low for everyone (shallower nadir)                              |
| ANC severe        | 0.10-0.45    | below 0.5: grade 4, febrile-neutropenia eligible (IDSA)             |
| ANC cyclic nadir  | 0.05-0.18    | below 0.2: the cyclic nadir of timeline.toml                        |
| ANC Duffy-null    | 1.25-1.45    | at least 1.21 (DANC LLN, Merz JAMA 2023) yet below 1.5 (standard LLN)     |
| ANC chronic       | 0.60-1.15    | below 1.21 (Duffy-null LLN), above 0.5                                  |
| lymphocytes       | 1.5-3.4      | LLN 1.0 adults, 1.25 for 5-18 y; ULN 4.0 adults, 7.0 children   |
| lymphocytes low   | 0.30-0.80    | below 1.0 (MSD Manual)                                              |
| WBC (normal draw) | 5.3-9.6      | male/child 5.0-10.0, female 3.5-11.0                            |
| Hb male/female    | 13.9-17 / 12.4-15.5 g/dL | 13.5 / 12.0 g/dL                                    |
| platelets         | 160-400      | 150                                                             |
| pancytopenic draw | WBC below 3.0, Hb 7.0-9.8 g/dL, platelets 15-120                   |
Children are 5-15 years old at the start of their history, so their ranges (Univ. Iowa 5-18 y
bands and the article's children's WBC range) do not change during it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Share of persons who are Duffy-null (ACKR1 rs2814778-CC / Fy(a-b-)). A property drawn per
#: person; the demo has no race or ancestry column. Frequencies by genetic-similarity group in All
#: of Us (Blood Adv 2025;9(6):1452): 68% in the
#: African-similar group, 14% Middle-Eastern-similar, 12% multi-group, 7% Pacific Islander, 5%
#: Hispanic, ~0 European-similar; 66.7% of Black adults in one US primary-care cohort (Merz et al.,
#: Blood Adv 2023;7(3):317). For a mixed, US-like population the demo assumes about 1 in 11.
DUFFY_NULL_SHARE = 0.09
#: Half of Duffy-null adults are given the steady low-normal ANC (DANC) scenario; the others join
#: the ordinary scenarios with ordinary baselines.
DUFFY_LOW_NORMAL_SHARE = 0.5

CHILD_SHARE = 0.15
CHILD_AGE_YEARS = (5.0, 15.5)
ADULT_AGE_YEARS = (18.5, 85.0)


@dataclass(frozen=True)
class Band:
    lo: float
    hi: float


ANC_NORMAL = Band(2.5, 6.8)
ANC_LOW = Band(0.30, 1.15)
ANC_ONSET = Band(1.0, 1.15)  # viral onset draw (febrile): low, yet at least 1.0 so never febrile neutropenia
ANC_GCSF = Band(0.8, 1.15)  # nadir under G-CSF: shallower, still low
ANC_SEVERE = Band(0.10, 0.45)
ANC_CYCLIC_NADIR = Band(0.05, 0.18)
ANC_DUFFY = Band(1.25, 1.45)
ANC_CHRONIC = Band(0.60, 1.15)
ANC_PANCYTOPENIA = Band(0.70, 1.10)
ANC_LEUKAEMIA_LOW = Band(0.20, 0.80)

LYM_NORMAL = Band(1.5, 3.4)
LYM_LOW_WBC = Band(1.2, 1.5)  # lymphocytes in a low-WBC draw that is not lymphocytopenic
LYM_LOW = Band(0.30, 0.80)
LYM_CLL = Band(15.0, 60.0)
MONO = Band(0.25, 0.80)
MONO_LOW_WBC = Band(0.12, 0.25)
EOS = Band(0.06, 0.35)
EOS_LOW_WBC = Band(0.02, 0.08)
BASO = Band(0.01, 0.08)
BASO_LOW_WBC = Band(0.0, 0.03)
WBC_NORMAL = Band(5.3, 9.6)

HB_NORMAL = {"male": Band(13.9, 17.0), "female": Band(12.4, 15.5)}
HB_LOW = Band(7.0, 9.8)
PLT_NORMAL = Band(160.0, 400.0)
PLT_LOW = Band(15.0, 120.0)

FEVER_C = Band(38.4, 39.8)  # at least 38.3 once (IDSA 2010)
VIRAL_FEVER_C = Band(38.1, 39.2)
AFEBRILE_C = Band(36.2, 37.4)

#: Multiplicative day-to-day variation of a count around a person's baseline (coefficient of
#: variation). Biological within-person CV of the ANC is of this order (~15%); the clip to the band
#: keeps the intent unambiguous.
COUNT_CV = 0.12

#: Findings whose truth each person carries (booleans in truth.parquet, columns of the flags table).
FINDINGS: tuple[str, ...] = (
    "neutropenia", "lymphocytopenia", "chronic_neutropenia", "cyclic", "drug_associated",
    "febrile_neutropenia", "pancytopenia",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    adult_weight: float
    child_weight: float
    truth: frozenset[str]  # findings that are true for every person of the scenario (FN varies)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("healthy", "healthy; routine CBCs within range", 0.36, 0.70, frozenset()),
    Scenario("viral", "acute viral leukopenia (influenza, COVID-19) with recovery within weeks", 0.10, 0.15,
             frozenset({"neutropenia"})),
    Scenario("chemotherapy", "chemotherapy in 21-day cycles, nadir day 7-14, recovery by the next cycle; some "
             "febrile neutropenia followed by G-CSF", 0.12, 0.0, frozenset({"neutropenia"})),
    Scenario("drug_induced", "drug-induced neutropenia 19-60 days after starting clozapine, carbamazepine, "
             "methimazole, TMP-SMX or a beta-lactam; recovery after stopping", 0.12, 0.08,
             frozenset({"neutropenia", "drug_associated"})),
    Scenario("drug_monitored", "on clozapine or carbamazepine with monitoring CBCs that stay normal", 0.04, 0.0,
             frozenset()),
    Scenario("autoimmune", "chronic autoimmune neutropenia with lupus or rheumatoid arthritis", 0.05, 0.0,
             frozenset({"neutropenia", "chronic_neutropenia"})),
    Scenario("cyclic", "cyclic neutropenia (period about 21 days), CBCs 3x/week for 8 weeks plus earlier "
             "visits at nadirs", 0.03, 0.07, frozenset({"neutropenia", "chronic_neutropenia", "cyclic"})),
    Scenario("b12_folate", "vitamin B12 or folate deficiency with pancytopenia, recovering on replacement", 0.05,
             0.0, frozenset({"neutropenia", "pancytopenia"})),
    Scenario("hiv", "HIV infection with lymphocytopenia, neutrophils normal", 0.05, 0.0,
             frozenset({"lymphocytopenia"})),
    Scenario("leukaemia_high", "chronic lymphocytic leukaemia: high WBC (lymphocytosis), no cytopenia", 0.02, 0.0,
             frozenset()),
    Scenario("leukaemia_low", "leukaemia presenting with low WBC, neutropenia and pancytopenia", 0.02, 0.0,
             frozenset({"neutropenia", "pancytopenia"})),
    Scenario("duffy_low_normal", "Duffy-null adult with a steady low-normal ANC (1.25-1.45): not disease", 0.0,
             0.0, frozenset()),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}

#: Drugs of the drug-induced scenario: (generic, names as prescribed, adult-only, condition, draw
#: interval in days). Monitoring intervals: clozapine weekly (label); the others every 1-2 weeks as
#: in outpatient antimicrobial therapy and the antithyroid/antiepileptic first months.
DRUGS: tuple[tuple[str, tuple[str, ...], bool, str, int], ...] = (
    ("clozapine", ("clozapine", "Clozaril"), True, "schizophrenia", 7),
    ("carbamazepine", ("carbamazepine", "Tegretol"), True, "epilepsy", 14),
    ("methimazole", ("methimazole", "Tapazole"), True, "Graves disease", 14),
    ("sulfamethoxazole/trimethoprim", ("Bactrim DS", "sulfamethoxazole/trimethoprim"), False,
     "urinary tract infection", 7),
    ("cefazolin", ("cefazolin",), False, "osteomyelitis", 7),
    ("piperacillin/tazobactam", ("piperacillin/tazobactam", "Zosyn"), True, "endocarditis", 7),
    ("amoxicillin", ("amoxicillin",), False, "osteomyelitis", 7),
)

REGIMENS: tuple[tuple[str, str], ...] = (
    ("AC (doxorubicin/cyclophosphamide)", "breast cancer"),
    ("TC (docetaxel/cyclophosphamide)", "breast cancer"),
    ("R-CHOP-21", "diffuse large B-cell lymphoma"),
    ("carboplatin/paclitaxel", "non-small cell lung cancer"),
    ("docetaxel", "prostate cancer"),
)
#: Medicines that are not linked to low counts (background noise in medications.parquet).
OTHER_MEDICINES: tuple[str, ...] = ("atorvastatin", "metformin", "lisinopril", "levothyroxine", "omeprazole",
                                    "amlodipine", "sertraline", "salbutamol")
GCSF = "pegfilgrastim"
