"""Which of a person's medicines, conditions and symptoms the article links to low white cells.

Inputs are free text written by people and EHRs ("Bactrim DS 800/160mg BID", "Keflex (cephalexin)",
"h/o Sjögren's"), so matching is on whole-word token sequences rather than substrings: a substring
search would find "ra" inside "ceftriaxone" and "gold" inside "golden retriever". All names, and the
reasons and sources shown with a match, live in knowledge/drugs.toml, conditions.toml and
symptoms.toml; this module only indexes them, so a reviewer checks the tables, not the code.

Each index is keyed by the first token of every name, so a lookup costs a dict probe per input token
plus a comparison for the few names that start with it: dose and frequency words cost one probe each.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any, Generic, NamedTuple, TypeVar

from ..knowledge import derived, load_table
from ..model import ConditionMatch, MedicationInput, MedicationMatch

T = TypeVar("T")

_WORD = re.compile(r"[A-Za-z0-9]+")
# Apostrophes are deleted rather than split on, so "Crohn's" and "Crohns" become the same token.
_APOSTROPHES = re.compile("['’‘`´ʼ]")
# Words that, shortly before a symptom or condition, mean it is absent ("no fever", "denies chills",
# "non-Hodgkin lymphoma"). Tokens are compared after `_tokens` drops a plural "s", hence "denie".
_NEGATION_BEFORE = frozenset({"no", "not", "non", "denie", "denied", "deny", "without", "nil", "never"})
_NEGATION_AFTER = frozenset({"negative", "neg", "absent", "excluded"})
_NEGATION_WINDOW = 3
_NEGATION_BREAK = frozenset({"but", "however"})


def _fold(text: str) -> str:
    """Delete apostrophes and accents, so "Sjögren’s", "Sjogren's" and "Sjogrens" read alike."""
    if _APOSTROPHES.search(text):
        text = _APOSTROPHES.sub("", text)
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text


def _tokens(text: str) -> tuple[str, ...]:
    """Folded, lower-case tokens with a plain plural "s" dropped, so "penicillins", "sulfa drugs" and
    "night sweats" need no extra names in the tables.

    Table names and input go through the same function, so an odd stem ("herpes" -> "herpe") still
    matches itself; "-ss", "-us" and "-is" endings (abscess, lupus, tuberculosis) and words of four
    letters or fewer ("aids") are left alone.
    """
    return tuple([
        t[:-1] if len(t) > 4 and t[-1] == "s" and t[-2] not in "siu" else t
        for t in _WORD.findall(_fold(text).lower())
    ])


def _is_capitalised(tokens: Iterable[str]) -> bool:
    return all(t.isupper() or t.isdigit() for t in tokens)


class Hit(NamedTuple, Generic[T]):
    target: T
    start: int
    end: int


class TokenIndex(NamedTuple, Generic[T]):
    """Names (as token tuples) -> what they name, grouped by first token, longest name first.

    `strict` names are abbreviations that are ordinary words in lower case ("ALL", "AIDS", "WHIM"):
    they match only when written in capitals or when they are the whole input.
    """

    by_first: dict[str, tuple[tuple[tuple[str, ...], T, bool], ...]]

    @classmethod
    def build(cls, names: Iterable[tuple[str, T, bool]], table: str) -> TokenIndex[T]:
        """Index (name, target, strict) triples; two targets sharing a name is a table error, not a tie."""
        seen: dict[tuple[str, ...], tuple[T, bool]] = {}
        for name, target, strict in names:
            key = _tokens(name)
            if not key:
                raise ValueError(f"{table}: name {name!r} has no letters or digits")
            prev = seen.get(key)
            if prev is not None and prev[0] != target:
                raise ValueError(f"{table}: {name!r} names both {prev[0]!r} and {target!r}")
            if prev is None or (prev[1] and not strict):
                seen[key] = (target, strict)
        grouped: dict[str, list[tuple[tuple[str, ...], T, bool]]] = {}
        for key, (target, strict) in seen.items():
            grouped.setdefault(key[0], []).append((key, target, strict))
        return cls({k: tuple(sorted(v, key=lambda e: -len(e[0]))) for k, v in grouped.items()})

    def scan(self, text: str) -> tuple[tuple[str, ...], list[Hit[T]]]:
        """Left-to-right, longest name at each position wins ("Bactrim DS" over "Bactrim")."""
        toks = _tokens(text)
        n = len(toks)
        get = self.by_first.get
        raw: list[str] | None = None  # tokens as written, only needed for a capitalised abbreviation
        hits: list[Hit[T]] = []
        i = 0
        while i < n:
            cands = get(toks[i])
            if cands is not None:
                for key, target, strict in cands:
                    end = i + len(key)
                    if toks[i:end] != key:
                        continue
                    if strict and len(key) != n:
                        if raw is None:
                            raw = _WORD.findall(_fold(text))
                        if len(raw) != n or not _is_capitalised(raw[i:end]):
                            continue
                    hits.append(Hit(target, i, end))
                    i = end
                    break
                else:
                    i += 1
            else:
                i += 1
        return toks, hits

    def names(self) -> Iterator[tuple[tuple[str, ...], T]]:
        """Every indexed name, for callers that need the vocabulary itself (tests, bulk engines)."""
        for entries in self.by_first.values():
            for key, target, _ in entries:
                yield key, target


def _negated(toks: tuple[str, ...], hit: Hit[Any]) -> bool:
    """Whether a mention is denied ("no fever", "HIV negative", "non-Hodgkin lymphoma").

    Deliberately local (three words back, broken by "but"): inputs are usually one item per string,
    and a wider window would let one "no" hide every later symptom in a sentence.
    """
    for tok in reversed(toks[max(0, hit.start - _NEGATION_WINDOW) : hit.start]):
        if tok in _NEGATION_BREAK:
            break
        if tok in _NEGATION_BEFORE:
            return True
    return hit.end < len(toks) and toks[hit.end] in _NEGATION_AFTER


# ---------------------------------------------------------------------------------------------
# Medicines


class DrugEntry(NamedTuple):
    """A drug, or a whole class when the input names only the class ("penicillins")."""

    generic: str
    classes: tuple[str, ...]  # labels, primary first
    class_keys: tuple[str, ...]
    why: str
    source: str
    risk: str = "listed"
    chemotherapy: bool = False
    monitoring: str | None = None
    class_only: bool = False
    dual_use: bool = False


def _join_unique(parts: Iterable[str], sep: str) -> str:
    out: list[str] = []
    for p in parts:
        p = p.strip()
        if p and p not in out:
            out.append(p)
    return sep.join(out)


@derived
def drug_entries() -> tuple[DrugEntry, ...]:
    """Every drug and every nameable class from drugs.toml, with the class reasons folded in."""
    table = load_table("drugs")
    classes: dict[str, dict[str, Any]] = table["classes"]
    entries: list[DrugEntry] = []
    for key, cls in classes.items():
        if cls.get("names"):
            entries.append(DrugEntry(
                generic=cls["label"], classes=(cls["label"],), class_keys=(key,), why=cls["why"],
                source=cls["source"], chemotherapy=key == "cytotoxic_chemotherapy", class_only=True,
            ))
    for drug in table["drugs"]:
        keys = tuple(drug["classes"])
        unknown = [k for k in keys if k not in classes]
        if unknown:
            raise ValueError(f"drugs: {drug['generic']!r} has unknown classes {unknown}")
        dual_use = bool(drug.get("dual_use", False))
        # A dual-use drug's reason speaks of its non-cancer use: no oncology wording for methotrexate
        # in arthritis (whether chemotherapy is active is the request's to say, not the drug name's).
        why_keys = [k for k in keys if not (dual_use and k == "cytotoxic_chemotherapy")]
        entries.append(DrugEntry(
            generic=drug["generic"],
            classes=tuple(classes[k]["label"] for k in keys),
            class_keys=keys,
            why=_join_unique([drug.get("why", ""), *(classes[k]["why"] for k in why_keys)], " "),
            source=drug["source"],
            risk=drug.get("risk", "listed"),
            chemotherapy=bool(drug.get("chemotherapy", False)),
            monitoring=drug.get("monitoring"),
            dual_use=dual_use,
        ))
    return tuple(entries)


@derived
def drug_index() -> TokenIndex[DrugEntry]:
    """Generic names, spellings, abbreviations and brands of every drug, and the class words."""
    table = load_table("drugs")
    by_generic = {e.generic: e for e in drug_entries() if not e.class_only}
    by_class_label = {e.generic: e for e in drug_entries() if e.class_only}
    names: list[tuple[str, DrugEntry, bool]] = []
    for cls in table["classes"].values():
        if cls.get("names"):
            entry = by_class_label[cls["label"]]
            names += [(n, entry, False) for n in cls["names"]]
            names += [(n, entry, True) for n in cls.get("abbreviations", [])]
    for drug in table["drugs"]:
        entry = by_generic[drug["generic"]]
        for n in (drug["generic"], *drug.get("names", []), *drug.get("brands", [])):
            names.append((n, entry, False))
        names += [(n, entry, True) for n in drug.get("abbreviations", [])]
    return TokenIndex.build(names, "drugs.toml")


@derived
def not_current_index() -> TokenIndex[str]:
    """The phrases of drugs.toml [not_current] ("allergy", "stopped", "h/o"), each naming itself."""
    return TokenIndex.build([(p, p, False) for p in load_table("drugs")["not_current"]["phrases"]],
                            "drugs.toml [not_current]")


@derived
def _not_current_rule() -> tuple[int, int, frozenset[str]]:
    rule = load_table("drugs")["not_current"]
    return int(rule["window_before"]), int(rule["window_after"]), frozenset(_tokens(" ".join(rule["breaks"])))


def _not_current_cue(toks: tuple[str, ...], hit: Hit[Any], cues: list[Hit[str]]) -> str | None:
    """The phrase saying this mention is not taken now, when one stands close enough to it."""
    before, after, breaks = _not_current_rule()
    for cue in cues:
        if cue.end <= hit.start:
            gap = toks[cue.end:hit.start]
            near = len(gap) <= before
        elif cue.start >= hit.end:
            gap = toks[hit.end:cue.start]
            near = len(gap) <= after
        else:
            continue
        if near and breaks.isdisjoint(gap):
            return cue.target
    return None


@derived(maxsize=4096)
def _drugs_in(text: str) -> tuple[tuple[DrugEntry, str | None], ...]:
    """Distinct drugs named in one medicine string, each with the phrase that says it is not taken
    now (or None); a class word adds nothing when a drug of that class is also named ("amoxicillin
    (a penicillin)")."""
    toks, hits = drug_index().scan(text)
    if not hits:
        return ()
    _, cues = not_current_index().scan(text)
    drugs: list[tuple[DrugEntry, str | None]] = []
    for hit in hits:
        if all(hit.target is not d for d, _ in drugs):
            drugs.append((hit.target, _not_current_cue(toks, hit, cues) if cues else None))
    covered = {k for d, _ in drugs if not d.class_only for k in d.class_keys}
    return tuple((d, cue) for d, cue in drugs if not (d.class_only and d.class_keys[0] in covered))


def match_medications(meds: Iterable[MedicationInput | str]) -> list[MedicationMatch]:
    """Medicines the article or docs/clinical-reference.md §9 link to low white cells, in input order.

    Unmatched medicines are left out so the caller can say "no known link" for them; a string that
    names two linked drugs gives two matches with the same `input`. Inputs naming the same drug are
    all kept, since each is a line the reader wrote. A mention the text says is not taken ("penicillin
    allergy", "stopped clozapine") is matched with `not_current` saying so; a stop date is judged
    against the result by `split_current`.
    """
    out: list[MedicationMatch] = []
    for med in meds:
        if isinstance(med, str):
            med = MedicationInput(name=med)
        for d, cue in _drugs_in(med.name):
            # Positional, in MedicationMatch's field order (input, generic, drug_class, classes, why,
            # source, risk, chemotherapy, monitoring, start, stop, dual_use, not_current).
            out.append(MedicationMatch(med.name, d.generic, d.classes[0], list(d.classes), d.why, d.source,
                                       d.risk, d.chemotherapy, d.monitoring, med.start, med.stop, d.dual_use,
                                       None if cue is None else f"mentioned, not current ({cue!r})"))
    return out


@derived
def drug_window_days() -> int:
    """Days after a stop date during which a medicine still counts as a cause (timeline.toml)."""
    return int(load_table("timeline")["drug_timing"]["association_window_days"])


class CurrentSplit(NamedTuple):
    """The matched medicines, split: current causes, and mentioned but not current."""

    current: list[MedicationMatch]
    not_current: list[MedicationMatch]


def split_current(matches: list[MedicationMatch], result: date | None) -> CurrentSplit:
    """Current causes and medicines mentioned but not current. A medicine stopped more than the drug window
    before the result (today for an undated result) is not a current cause (it still counts for drug
    timing, which reads the request's medicines); a free-text mention saying it is not taken never
    is. Nothing is dropped."""
    current: list[MedicationMatch] = []
    not_current: list[MedicationMatch] = []
    for m in matches:
        if m.not_current is None and m.stop is not None \
                and ((result or date.today()) - m.stop).days > drug_window_days():
            m.not_current = (f"stopped {m.stop.isoformat()}, more than {drug_window_days()} days before "
                             "the result (drug window, timeline.toml)")
        (current if m.not_current is None else not_current).append(m)
    return CurrentSplit(current, not_current)


def taking_at(m: MedicationMatch, result: date | None) -> bool:
    """Whether a current cause is still being taken at the result, today for an undated one (label
    monitoring follows only those)."""
    return m.stop is None or m.stop >= (result or date.today())


# ---------------------------------------------------------------------------------------------
# Conditions


class ConditionEntry(NamedTuple):
    """A condition from conditions.toml, as a match reports it."""

    name: str
    category: str
    course: str
    article_wording: str
    source: str


@derived
def condition_index() -> TokenIndex[ConditionEntry]:
    """Canonical names and synonyms of every condition in conditions.toml."""
    names: list[tuple[str, ConditionEntry, bool]] = []
    for c in load_table("conditions")["conditions"]:
        entry = ConditionEntry(c["name"], c["category"], c["course"], c["article_wording"], c["source"])
        names += [(n, entry, False) for n in (c["name"], *c.get("synonyms", []))]
        names += [(n, entry, True) for n in c.get("abbreviations", [])]
    return TokenIndex.build(names, "conditions.toml")


@derived(maxsize=4096)
def _conditions_in(text: str) -> tuple[ConditionEntry, ...]:
    toks, hits = condition_index().scan(text)
    return tuple(h.target for h in hits if not _negated(toks, h))


def match_conditions(names: Iterable[str]) -> list[ConditionMatch]:
    """Conditions the article names as causes, each once (the first input naming it is kept).

    A negated mention ("no HIV", "HIV negative", "non-Hodgkin lymphoma") is not a match.
    """
    out: list[ConditionMatch] = []
    seen: set[str] = set()
    for text in names:
        for c in _conditions_in(text):
            if c.name in seen:
                continue
            seen.add(c.name)
            name, category, course, article_wording, source = c
            out.append(ConditionMatch(text, name, category, course, article_wording, source))
    return out


# ---------------------------------------------------------------------------------------------
# Symptoms


class SymptomEntry(NamedTuple):
    """An infection symptom from symptoms.toml; the label is the article's word for it."""

    key: str
    label: str
    source: str


@derived
def symptom_index() -> TokenIndex[SymptomEntry]:
    """Article labels and synonyms of the infection symptoms in symptoms.toml."""
    names: list[tuple[str, SymptomEntry, bool]] = []
    for s in load_table("symptoms")["symptoms"]:
        entry = SymptomEntry(s["key"], s["label"], s["source"])
        names += [(n, entry, False) for n in (s["label"], s["key"].replace("_", " "), *s.get("synonyms", []))]
    return TokenIndex.build(names, "symptoms.toml")


@derived(maxsize=4096)
def _symptoms_in(text: str) -> tuple[SymptomEntry, ...]:
    toks, hits = symptom_index().scan(text)
    return tuple(h.target for h in hits if not _negated(toks, h))


class SymptomMatch(NamedTuple):
    """A reported symptom of infection: the person's words and the article's label for it."""

    input: str
    label: str


def match_symptoms(texts: Iterable[str]) -> list[SymptomMatch]:
    """Each reported symptom of infection, each label once, input order.

    The article's label is returned (not the input) so that patient text quotes the article.
    """
    out: list[SymptomMatch] = []
    seen: set[str] = set()
    for text in texts:
        for key, match in _symptom_matches(text):
            if key not in seen:
                seen.add(key)
                out.append(match)
    return out


@derived(maxsize=4096)
def _symptom_matches(text: str) -> tuple[tuple[str, SymptomMatch], ...]:
    """(symptom key, match) per symptom in one text, built once per distinct text."""
    return tuple((s.key, SymptomMatch(text, s.label)) for s in _symptoms_in(text))
