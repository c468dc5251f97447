"""Medicines, conditions and symptoms the article links to low white cells: tables and matching."""

from __future__ import annotations

import re
from datetime import date

import pytest

from leukowatch.knowledge import load_table
from leukowatch.model import MedicationInput
from leukowatch.rules.causes import (
    TokenIndex,
    condition_index,
    drug_index,
    match_conditions,
    match_medications,
    match_symptoms,
    symptom_index,
)


def med(name: str) -> list[tuple[str, str]]:
    """(generic, primary class label) for each match of one medicine string."""
    return [(m.generic, m.drug_class) for m in match_medications([MedicationInput(name)])]


def one_med(name: str):
    matches = match_medications([MedicationInput(name)])
    assert len(matches) == 1, (name, matches)
    return matches[0]


def one_condition(name: str):
    matches = match_conditions([name])
    assert len(matches) == 1, (name, matches)
    return matches[0]


def class_labels() -> dict[str, str]:
    return {k: v["label"] for k, v in load_table("drugs")["classes"].items()}


# ---------------------------------------------------------------------------------------------
# Tables


def test_every_entry_in_every_table_has_a_source():
    drugs = load_table("drugs")
    entries = [*drugs["classes"].values(), *drugs["drugs"], *load_table("conditions")["conditions"]]
    entries += load_table("symptoms")["symptoms"]
    advice = load_table("advice")
    for section in ("treatment", "home_care", "contact_doctor"):
        entries += advice[section]
    assert len(entries) > 150
    for entry in entries:
        assert isinstance(entry.get("source"), str) and entry["source"].strip(), entry


def test_drug_table_is_consistent():
    table = load_table("drugs")
    required_classes = {
        "quinidine", "cephalosporin", "pyrazolone", "heavy_metal", "phenothiazine", "sulfonamide", "penicillin",
        "antithyroid", "antipsychotic_clozapine", "anticonvulsant", "antiplatelet", "antiviral", "iron_chelator",
        "anti_cd20", "immunosuppressant_antimetabolite", "cytotoxic_chemotherapy", "antiarrhythmic", "sulfone",
        "aminosalicylate",
    }
    assert required_classes <= set(table["classes"])
    for cls in table["classes"].values():
        assert cls["label"] and cls["why"].endswith(".")
    generics = [d["generic"] for d in table["drugs"]]
    assert len(generics) == len(set(generics))
    for d in table["drugs"]:
        assert d["generic"] == d["generic"].lower()
        assert d["classes"] and set(d["classes"]) <= set(table["classes"]), d["generic"]
        assert d["risk"] in ("high", "listed")
        assert d.get("monitoring") in (None, "clozapine", "deferiprone")
        assert d["chemotherapy"] == ("cytotoxic_chemotherapy" in d["classes"]), d["generic"]


def test_condition_table_is_consistent():
    categories = {
        "autoimmune", "cancer", "infection", "inflammatory", "vasculitis", "deficiency", "inherited",
        "bone_marrow", "spleen",
    }
    for c in load_table("conditions")["conditions"]:
        assert c["category"] in categories, c["name"]
        assert c["course"] in ("acute", "chronic", "either"), c["name"]
        assert c["article_wording"].strip()


def test_advice_table_covers_the_article_and_uses_known_triggers():
    advice = load_table("advice")
    whens = {
        "always", "low_wbc", "neutropenia", "infection_symptoms", "chemotherapy", "fever",
        "recurrent_infections", "medication_cause", "genetic_cause", "febrile_neutropenia",
        "severe_neutropenia", "child",
    }
    keys: list[str] = []
    for section in ("treatment", "home_care", "contact_doctor"):
        for entry in advice[section]:
            assert entry["when"] and set(entry["when"]) <= whens, entry["key"]
            assert set(entry.get("unless", [])) <= whens, entry["key"]
            assert entry["text"].strip()
            keys.append(entry["key"])
    assert len(keys) == len(set(keys))
    text = {e["key"]: e["text"].lower() for s in ("treatment", "home_care", "contact_doctor") for e in advice[s]}
    assert "antibiotics" in text["antibiotics_for_infection"]
    assert "g-csf" in text["growth_factor_chemotherapy"] and "g-csf" in text["growth_factor_genetic"]
    assert "oncology team" in text["chemotherapy_pause_decision"]
    for key in ("healthy_diet", "rest", "protect_skin", "hygiene", "oral_hygiene", "avoid_ill_people",
                "watch_for_infection", "signs_of_infection", "recurrent_infections",
                "febrile_neutropenia_emergency"):
        assert key in text
    assert "emergency" in text["febrile_neutropenia_emergency"]
    no_change = [e for e in advice["treatment"] if "before making any change" in e["text"].lower()
                 or "make no change" in e["text"].lower()]
    assert {w for e in no_change for w in e["when"]} >= {"always", "medication_cause"}


_STOP = re.compile(r"\b(stop|stopping|stopped|discontinue|discontinuing|quit)\b", re.IGNORECASE)
_ALLOWED_BEFORE = re.compile(r"\b(never|not|don't|don’t|do not)\b(\W+\w+){0,2}\W*$", re.IGNORECASE)


def test_advice_never_tells_anyone_to_stop_a_medicine():
    advice = load_table("advice")
    for section in ("treatment", "home_care", "contact_doctor"):
        for entry in advice[section]:
            text = entry["text"]
            for m in _STOP.finditer(text):
                assert _ALLOWED_BEFORE.search(text[: m.start()]), (entry["key"], text)


def test_stop_check_catches_an_instruction_to_stop():
    text = "If this happens, stop taking the medicine."
    m = _STOP.search(text)
    assert m and not _ALLOWED_BEFORE.search(text[: m.start()])


# ---------------------------------------------------------------------------------------------
# Medicines


ARTICLE_MEDICINES = {
    # the article's list, word for word, then its members
    "quinidine": "quinidine (antiarrhythmic)",
    "cephalosporin": "cephalosporin",
    "aminopyrine": "pyrazolone analgesic",
    "heavy metals": "heavy metal",
    "phenothiazine": "phenothiazine",
    "sulfonamides": "sulfonamide",
    "penicillins": "penicillin",
}

CLASS_MEMBERS = {
    "cephalosporin": [
        "cephalexin", "cefazolin", "ceftriaxone", "cefuroxime", "cefdinir", "cefepime", "cefadroxil", "cefalotin",
    ],
    "penicillin": [
        "penicillin g", "penicillin v", "amoxicillin", "amoxicillin/clavulanate", "ampicillin",
        "piperacillin/tazobactam", "nafcillin", "oxacillin", "dicloxacillin",
    ],
    "phenothiazine": [
        "chlorpromazine", "prochlorperazine", "promethazine", "perphenazine", "fluphenazine", "thioridazine",
        "trifluoperazine",
    ],
    "sulfonamide": ["sulfamethoxazole/trimethoprim", "sulfadiazine", "sulfasalazine"],
    "heavy_metal": ["auranofin", "aurothioglucose", "sodium aurothiomalate", "arsenic trioxide", "gold", "arsenic",
                    "mercury"],
    "pyrazolone": ["aminopyrine", "metamizole"],
    "quinidine": ["quinidine"],
    "cytotoxic_chemotherapy": [
        "cyclophosphamide", "doxorubicin", "epirubicin", "docetaxel", "paclitaxel", "carboplatin", "cisplatin",
        "oxaliplatin", "fluorouracil", "capecitabine", "gemcitabine", "etoposide", "vincristine", "vinorelbine",
        "irinotecan", "cytarabine", "temozolomide", "ifosfamide", "bendamustine", "pemetrexed", "methotrexate",
    ],
    "immunosuppressant_antimetabolite": ["methotrexate", "azathioprine", "mycophenolate"],
}

# clinical-reference.md §9 highest-risk list (Andersohn 2007; ASH 2017 review), as written there.
SECTION_9_HIGH_RISK = {
    "carbimazole": "carbimazole",
    "methimazole": "methimazole",
    "thiamazole": "methimazole",
    "propylthiouracil": "propylthiouracil",
    "clozapine": "clozapine",
    "dapsone": "dapsone",
    "metamizole": "metamizole",
    "dipyrone": "metamizole",
    "penicillin G": "penicillin g",
    "amoxicillin": "amoxicillin",
    "procainamide": "procainamide",
    "rituximab": "rituximab",
    "sulfasalazine": "sulfasalazine",
    "ticlopidine": "ticlopidine",
    "trimethoprim-sulfamethoxazole": "sulfamethoxazole/trimethoprim",
    "valganciclovir": "valganciclovir",
    "carbamazepine": "carbamazepine",
    "deferiprone": "deferiprone",
}


@pytest.mark.parametrize(("text", "label"), sorted(ARTICLE_MEDICINES.items()))
def test_article_medicine_words_resolve(text, label):
    assert [c for _, c in med(text)] == [label]


@pytest.mark.parametrize(
    ("cls", "generic"), [(c, g) for c, gs in sorted(CLASS_MEMBERS.items()) for g in gs]
)
def test_class_members_resolve_with_their_class(cls, generic):
    m = one_med(generic)
    assert m.generic == generic
    assert class_labels()[cls] in m.classes


@pytest.mark.parametrize(("text", "generic"), sorted(SECTION_9_HIGH_RISK.items()))
def test_section_9_drugs_resolve_as_high_risk(text, generic):
    m = one_med(text)
    assert m.generic == generic
    assert m.risk == "high"


def test_every_name_and_brand_in_the_table_resolves_to_its_own_drug():
    for d in load_table("drugs")["drugs"]:
        for name in (d["generic"], *d["names"], *d["brands"]):
            for spelling in (name, name.upper(), f"{name} 10 mg twice daily"):
                assert [g for g, _ in med(spelling)] == [d["generic"]], spelling


def test_every_class_word_resolves_to_the_class():
    for cls in load_table("drugs")["classes"].values():
        for name in cls.get("names", []):
            m = one_med(name)
            assert m.generic == cls["label"] and m.classes == [cls["label"]], name


@pytest.mark.parametrize(
    ("text", "generic", "label"),
    [
        ("Keflex", "cephalexin", "cephalosporin"),
        ("Bactrim DS", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("Bactrim", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("Septra", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("co-trimoxazole", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("TMP-SMX", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("smx-tmp", "sulfamethoxazole/trimethoprim", "sulfonamide"),
        ("Augmentin", "amoxicillin/clavulanate", "penicillin"),
        ("Zosyn", "piperacillin/tazobactam", "penicillin"),
        ("Tegretol", "carbamazepine", "anticonvulsant (carbamazepine)"),
        ("Tapazole", "methimazole", "antithyroid drug (thionamide)"),
        ("Rituxan", "rituximab", "anti-CD20 antibody"),
        ("Valcyte", "valganciclovir", "antiviral (ganciclovir/valganciclovir)"),
        ("Azulfidine", "sulfasalazine", "aminosalicylate (sulfasalazine)"),
        ("Imuran", "azathioprine", "immunosuppressant / antimetabolite"),
        ("CellCept", "mycophenolate", "immunosuppressant / antimetabolite"),
        ("Trexall", "methotrexate", "immunosuppressant / antimetabolite"),
        ("Otrexup", "methotrexate", "immunosuppressant / antimetabolite"),
        ("Taxotere", "docetaxel", "cytotoxic chemotherapy"),
        ("Taxol", "paclitaxel", "cytotoxic chemotherapy"),
        ("Adriamycin", "doxorubicin", "cytotoxic chemotherapy"),
        ("Cytoxan", "cyclophosphamide", "immunosuppressant / antimetabolite"),
        ("Xeloda", "capecitabine", "cytotoxic chemotherapy"),
        ("Gemzar", "gemcitabine", "cytotoxic chemotherapy"),
        ("Alimta", "pemetrexed", "cytotoxic chemotherapy"),
        ("Temodar", "temozolomide", "cytotoxic chemotherapy"),
        ("5-FU", "fluorouracil", "cytotoxic chemotherapy"),
        ("Novalgin", "metamizole", "pyrazolone analgesic"),
    ],
)
def test_brands_and_abbreviations(text, generic, label):
    m = one_med(text)
    assert (m.generic, m.drug_class) == (generic, label)


def test_clozapine_and_deferiprone_carry_their_monitoring_table():
    for brand in ("Clozaril", "FazaClo", "Versacloz", "clozapine"):
        m = one_med(brand)
        assert (m.generic, m.monitoring) == ("clozapine", "clozapine")
    m = one_med("Ferriprox")
    assert (m.generic, m.monitoring) == ("deferiprone", "deferiprone")
    assert one_med("amoxicillin").monitoring is None


def test_chemotherapy_flag():
    assert one_med("Taxotere 75 mg/m2").chemotherapy
    assert one_med("methotrexate").chemotherapy
    assert one_med("chemotherapy").chemotherapy
    assert not one_med("Bactrim").chemotherapy


@pytest.mark.parametrize(
    ("text", "generic"),
    [
        ("amoxicillin 500 mg tid", "amoxicillin"),
        ("Amoxicillin 500mg PO TID x 7 days", "amoxicillin"),
        ("Bactrim DS 800/160mg BID", "sulfamethoxazole/trimethoprim"),
        ("Keflex (cephalexin) 250mg", "cephalexin"),
        ("ceftriaxone 1 g IV q24h", "ceftriaxone"),
        ("CLOZAPINE 100MG NOCTE", "clozapine"),
        ("amoxicillin/clavulanate 875/125 mg", "amoxicillin/clavulanate"),
        ("amoxicillin-clavulanic acid 875 mg", "amoxicillin/clavulanate"),
        ("amoxicillin (a penicillin)", "amoxicillin"),
        ("Tegretol XR 200 mg", "carbamazepine"),
        ("rituximab-abbs 375 mg/m2", "rituximab"),
    ],
)
def test_dose_and_frequency_text_is_tolerated(text, generic):
    assert [g for g, _ in med(text)] == [generic]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("penicillins", "penicillin"),
        ("a cephalosporin", "cephalosporin"),
        ("sulfa drugs", "sulfonamide"),
        ("Sulfa", "sulfonamide"),
        ("phenothiazines", "phenothiazine"),
        ("gold", "heavy metal"),
        ("gold salts", "heavy metal"),
        ("arsenic", "heavy metal"),
        ("mercury", "heavy metal"),
        ("heavy metal exposure", "heavy metal"),
    ],
)
def test_bare_class_words(text, label):
    assert [c for _, c in med(text)] == [label]


def test_class_only_match_uses_the_class_label_as_generic():
    m = one_med("penicillins")
    assert m.generic == m.drug_class == "penicillin"
    assert m.why and m.source


def test_longest_name_wins():
    assert med("Bactrim DS") == [("sulfamethoxazole/trimethoprim", "sulfonamide")]
    assert [g for g, _ in med("amoxicillin/clavulanate")] == ["amoxicillin/clavulanate"]
    assert [g for g, _ in med("penicillin G benzathine")] == ["penicillin g"]
    assert [g for g, _ in med("arsenic trioxide")] == ["arsenic trioxide"]
    assert [g for g, _ in med("gold sodium thiomalate")] == ["sodium aurothiomalate"]


def test_two_drugs_in_one_string_give_two_matches():
    assert [g for g, _ in med("amoxicillin 500 mg and ceftriaxone 1 g")] == ["amoxicillin", "ceftriaxone"]


@pytest.mark.parametrize(
    "text",
    ["paracetamol", "acetaminophen 500 mg", "golden retriever", "grapefruit juice", "Goldenseal", "lisinopril 10 mg",
     "aspirin", "", "   ", "500 mg bid"],
)
def test_unknown_medicines_return_nothing(text):
    assert med(text) == []


def test_medication_match_fields():
    start, stop = date(2026, 9, 1), date(2026, 11, 1)
    [m] = match_medications([MedicationInput("Bactrim DS", start=start, stop=stop)])
    assert m.input == "Bactrim DS"
    assert m.generic == "sulfamethoxazole/trimethoprim"
    assert m.drug_class == "sulfonamide" and m.classes == ["sulfonamide"]
    assert (m.start, m.stop) == (start, stop)
    assert m.risk == "high" and not m.chemotherapy and m.monitoring is None
    assert "Andersohn" in m.source and "Article" in m.source


def test_why_combines_the_reasons_of_every_class():
    m = one_med("sulfasalazine")
    assert m.classes == ["aminosalicylate (sulfasalazine)", "sulfonamide"]
    assert "Sulfasalazine" in m.why and "Sulfonamides" in m.why


def test_input_order_and_duplicates_are_kept_for_medicines():
    matches = match_medications([MedicationInput("Bactrim"), MedicationInput("paracetamol"),
                                 MedicationInput("clozapine"), MedicationInput("co-trimoxazole")])
    assert [m.input for m in matches] == ["Bactrim", "clozapine", "co-trimoxazole"]


# ---------------------------------------------------------------------------------------------
# Conditions


ARTICLE_CONDITIONS = {
    # input: (canonical name, course)
    "rheumatoid arthritis": ("rheumatoid arthritis", "chronic"),
    "lupus": ("lupus", "chronic"),
    "Sjögren’s": ("Sjögren's syndrome", "chronic"),
    "Hodgkin lymphoma": ("Hodgkin lymphoma", "chronic"),
    "leukemia": ("leukemia", "chronic"),
    "myelofibrosis": ("myelofibrosis", "chronic"),
    "influenza": ("influenza", "acute"),
    "HIV": ("HIV", "chronic"),
    "hepatitis": ("hepatitis", "either"),
    "inflammatory bowel disease (IBD)": ("inflammatory bowel disease", "either"),
    "granulomatosis with polyangiitis": ("granulomatosis with polyangiitis", "either"),
    "folate deficiency": ("folate deficiency", "either"),
    "copper deficiency": ("copper deficiency", "either"),
    "vitamin B12 deficiency": ("vitamin B12 deficiency", "either"),
    "Chediak-Higashi syndrome": ("Chediak-Higashi syndrome", "chronic"),
    "Kostmann syndrome": ("Kostmann syndrome", "chronic"),
    "COVID-19": ("COVID-19", "acute"),
    "myelokathexis": ("myelokathexis", "chronic"),
    "anemia": ("anemia", "chronic"),
    "overactive spleen": ("overactive spleen", "chronic"),
    "myelodysplastic syndromes": ("myelodysplastic syndromes", "chronic"),
    "tuberculosis": ("tuberculosis", "chronic"),
    "infection of the spleen": ("infection of the spleen", "chronic"),
}

CONDITION_SYNONYMS = {
    "RA": "rheumatoid arthritis",
    "ra": "rheumatoid arthritis",
    "h/o RA": "rheumatoid arthritis",
    "SLE": "lupus",
    "systemic lupus erythematosus": "lupus",
    "Sjogren": "Sjögren's syndrome",
    "sjogrens": "Sjögren's syndrome",
    "Sjögren's syndrome": "Sjögren's syndrome",
    "sicca syndrome": "Sjögren's syndrome",
    "Hodgkin's disease": "Hodgkin lymphoma",
    "leukaemia": "leukemia",
    "AML": "leukemia",
    "ALL": "leukemia",
    "CLL": "leukemia",
    "CML": "leukemia",
    "acute myeloid leukemia": "leukemia",
    "flu": "influenza",
    "AIDS": "HIV",
    "HIV/AIDS": "HIV",
    "hepatitis B": "hepatitis",
    "Hepatitis C": "hepatitis",
    "TB": "tuberculosis",
    "covid": "COVID-19",
    "SARS-CoV-2": "COVID-19",
    "IBD": "inflammatory bowel disease",
    "Crohn's disease": "inflammatory bowel disease",
    "Crohn disease": "inflammatory bowel disease",
    "ulcerative colitis": "inflammatory bowel disease",
    "UC": "inflammatory bowel disease",
    "GPA": "granulomatosis with polyangiitis",
    "Wegener's granulomatosis": "granulomatosis with polyangiitis",
    "B12 deficiency": "vitamin B12 deficiency",
    "pernicious anemia": "vitamin B12 deficiency",
    "severe congenital neutropenia": "Kostmann syndrome",
    "WHIM syndrome": "myelokathexis",
    "aplastic anemia": "aplastic anemia",
    "hypersplenism": "overactive spleen",
    "splenomegaly": "overactive spleen",
    "MDS": "myelodysplastic syndromes",
    "spleen infection": "infection of the spleen",
}


@pytest.mark.parametrize(("text", "expected"), sorted(ARTICLE_CONDITIONS.items()))
def test_article_conditions_resolve_with_their_course(text, expected):
    c = one_condition(text)
    assert (c.name, c.course) == expected
    assert c.source and c.article_wording and c.input == text


@pytest.mark.parametrize(("text", "name"), sorted(CONDITION_SYNONYMS.items()))
def test_condition_synonyms(text, name):
    assert one_condition(text).name == name


def test_every_condition_name_and_synonym_resolves_to_itself():
    for c in load_table("conditions")["conditions"]:
        for name in (c["name"], *c.get("synonyms", []), *c.get("abbreviations", [])):
            assert [m.name for m in match_conditions([name])] == [c["name"]], name
            assert [m.name for m in match_conditions([f"history of {name}"])] == [c["name"]], name


def test_abbreviations_that_are_ordinary_words_need_capitals():
    assert match_conditions(["hearing aids"]) == []
    assert match_conditions(["all of the above"]) == []
    assert [c.name for c in match_conditions(["ALL in remission"])] == ["leukemia"]
    assert [c.name for c in match_conditions(["history of AIDS"])] == ["HIV"]


def test_condition_course_tags():
    assert one_condition("influenza").course == "acute"
    assert one_condition("COVID-19").course == "acute"
    assert one_condition("Kostmann syndrome").course == "chronic"
    assert one_condition("tuberculosis").category == "infection"
    assert one_condition("myelokathexis").category == "inherited"


@pytest.mark.parametrize(
    "text", ["golden", "grapefruit", "ceftriaxone", "grapefruit allergy", "hearing aids", "cataract", "gout",
             "non-Hodgkin lymphoma", "no history of HIV", "HIV negative", ""],
)
def test_conditions_without_false_positives(text):
    assert match_conditions([text]) == []


def test_conditions_are_deduplicated_keeping_the_first_input():
    matches = match_conditions(["SLE", "lupus", "RA", "systemic lupus erythematosus"])
    assert [(m.input, m.name) for m in matches] == [("SLE", "lupus"), ("RA", "rheumatoid arthritis")]


def test_one_string_can_name_two_conditions():
    assert [m.name for m in match_conditions(["lupus and rheumatoid arthritis"])] == ["lupus", "rheumatoid arthritis"]


# ---------------------------------------------------------------------------------------------
# Symptoms


ARTICLE_SYMPTOMS = [
    "fever", "sweating", "chills", "toothache", "sore throat", "mouth ulcers that are difficult to heal",
    "tiredness", "flu-like symptoms", "rash",
]


def test_symptom_table_has_the_article_list():
    assert [s["label"] for s in load_table("symptoms")["symptoms"]] == ARTICLE_SYMPTOMS


@pytest.mark.parametrize("label", ARTICLE_SYMPTOMS)
def test_article_symptoms_match_themselves(label):
    assert match_symptoms([label]) == [(label, label)]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("sweats", "sweating"),
        ("night sweats", "sweating"),
        ("Fatigue", "tiredness"),
        ("feeling tired", "tiredness"),
        ("mouth sores", "mouth ulcers that are difficult to heal"),
        ("mouth ulcers", "mouth ulcers that are difficult to heal"),
        ("flu like", "flu-like symptoms"),
        ("flu-like illness", "flu-like symptoms"),
        ("pyrexia", "fever"),
        ("febrile", "fever"),
        ("shivering", "chills"),
        ("rigors", "chills"),
        ("tooth pain", "toothache"),
        ("throat pain", "sore throat"),
        ("skin rash", "rash"),
    ],
)
def test_symptom_synonyms(text, label):
    assert match_symptoms([text]) == [(text, label)]


def test_every_symptom_synonym_resolves_to_its_symptom():
    for s in load_table("symptoms")["symptoms"]:
        for name in s["synonyms"]:
            assert [label for _, label in match_symptoms([name])] == [s["label"]], name


def test_symptoms_in_order_once_each_and_negation():
    pairs = match_symptoms(["Fever 38.6", "sore throat and chills", "no rash", "fevers", "headache"])
    assert pairs == [("Fever 38.6", "fever"), ("sore throat and chills", "sore throat"),
                     ("sore throat and chills", "chills")]
    assert match_symptoms(["denies fever"]) == []
    assert match_symptoms(["no fever but chills"]) == [("no fever but chills", "chills")]


# ---------------------------------------------------------------------------------------------
# Indexes


def test_indexes_are_built_once():
    assert drug_index() is drug_index()
    assert condition_index() is condition_index()
    assert symptom_index() is symptom_index()


def test_a_name_shared_by_two_entries_is_a_table_error():
    with pytest.raises(ValueError, match="names both"):
        TokenIndex.build([("Bactrim", "a", False), ("bactrim", "b", False)], "test")


def test_matching_is_on_whole_words():
    idx = TokenIndex.build([("ra", "RA", False), ("gold", "gold", False)], "test")
    assert idx.scan("ceftriaxone")[1] == []
    assert idx.scan("golden retriever")[1] == []
    assert [h.target for h in idx.scan("gold, RA")[1]] == ["gold", "RA"]


def test_not_current_wording_applies_only_near_the_medicine() -> None:
    """'allergic to sulfa drugs and penicillins' covers both; a cue a sentence away covers neither."""
    from leukowatch.rules.causes import match_medications

    both = match_medications(["allergic to sulfa drugs and penicillins"])
    assert len(both) == 2 and all(m.not_current for m in both)
    far = match_medications(["clozapine 100 mg nightly with ANC monitoring, not taking any other tablets"])
    assert [m.not_current for m in far] == [None]
