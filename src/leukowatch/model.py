"""The shared vocabulary of leukowatch: what an observation, a request and an assessment hold.

Every other module speaks in these types. They are plain dataclasses (no pydantic) so that the
per-patient path imports nothing heavy and starts fast. Counts are always held in 10^9/L once an
observation leaves `units.py`; the original spelling survives only as provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

#: White-cell analytes, in the order reports show them. `neutrophils` is the ANC (segmented + bands).
WHITE_CELL_ANALYTES: tuple[str, ...] = (
    "wbc", "neutrophils", "bands", "lymphocytes", "monocytes", "eosinophils", "basophils",
)
#: Analytes accepted on input but folded into others (segmented neutrophils + bands = ANC).
INPUT_ONLY_ANALYTES: tuple[str, ...] = ("segmented_neutrophils",)
#: Context analytes from the same complete blood count.
CONTEXT_ANALYTES: tuple[str, ...] = ("hemoglobin", "platelets", "rbc", "hematocrit")
ANALYTES: tuple[str, ...] = WHITE_CELL_ANALYTES + INPUT_ONLY_ANALYTES + CONTEXT_ANALYTES

#: Canonical unit per analyte (what values are held in after conversion).
CANONICAL_UNIT: dict[str, str] = {
    **{a: "10^9/L" for a in WHITE_CELL_ANALYTES + INPUT_ONLY_ANALYTES},
    "platelets": "10^9/L",
    "hemoglobin": "g/dL",
    "rbc": "10^12/L",
    "hematocrit": "%",
}
#: Analytes that can arrive as a percentage of the WBC (a differential).
DIFFERENTIAL_ANALYTES: tuple[str, ...] = (
    "neutrophils", "bands", "segmented_neutrophils", "lymphocytes", "monocytes", "eosinophils", "basophils",
)

FINDING_CODES: tuple[str, ...] = (
    "leukopenia", "neutropenia", "lymphocytopenia", "monocytopenia", "eosinopenia", "basopenia",
    "leukocytosis", "neutrophilia", "lymphocytosis", "monocytosis", "eosinophilia", "basophilia",
    "anemia", "thrombocytopenia", "pancytopenia",
)
ALERT_CODES: tuple[str, ...] = (
    "febrile_neutropenia", "severe_neutropenia", "hyperleukocytosis", "drug_agranulocytosis",
    "infection_symptoms", "chemotherapy_hold", "drug_monitoring", "chronic_neutropenia", "recurrent_infections",
)

Sex = Literal["male", "female", "unknown"]
Flag = Literal["low", "high", "normal"]
AlertLevel = Literal["critical", "warning", "info"]


class InputError(ValueError):
    """Bad input: names the field (a JSON path, segment or column) and the problem.

    The CLI turns it into exit code 2 and the service into HTTP 422; neither shows a traceback.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


@dataclass(frozen=True)
class ReferenceRange:
    """A lab's or a profile's limits, in the analyte's canonical unit; either side may be open."""

    low: float | None = None
    high: float | None = None


@dataclass
class Observation:
    """One lab result, already in canonical units.

    `percent` is True for a differential given as % of the WBC; `value` is then that percentage.
    `comparator` keeps a reported '<' or '>' (e.g. a reported "less than 0.1"): the value is the bound; the rules judge
    `<x` as just below x and `>x` as just above it (rules.counts.directed: the mildest grade the bound allows, said in
    the output).
    """

    analyte: str
    value: float
    unit: str
    percent: bool = False
    time: datetime | None = None
    reference_range: ReferenceRange | None = None
    comparator: str | None = None
    patient_id: str | None = None
    source: str | None = None  # provenance: file, message control id / resource id, line
    code: str | None = None  # LOINC code when it came with one
    original_unit: str | None = None
    lab_flag: str | None = None  # OBX-8 / FHIR interpretation as sent


@dataclass
class Patient:
    """Who the counts belong to: sex and age choose the reference range, Duffy status the profile."""

    id: str | None = None
    sex: Sex = "unknown"
    age_years: float | None = None
    birth_date: date | None = None
    duffy_null: bool = False

    def age_at(self, when: datetime | None) -> float | None:
        """Age in years at `when` from the birth date (preferred), else the stated age. An undated
        result is read as today's, so a child's birth date still picks the child's ranges."""
        if self.birth_date is not None:
            days = ((when.date() if when is not None else date.today()) - self.birth_date).days
            return days / 365.25
        return self.age_years


@dataclass
class MedicationInput:
    """A medicine as the person or the EHR wrote it, with its dates when known (drug timing)."""

    name: str
    start: date | None = None
    stop: date | None = None


@dataclass
class Chemotherapy:
    """Treatment context: whether counts allow the next cycle, and when nadirs are expected."""

    active: bool = False
    last_dose: date | None = None
    regimen: str | None = None
    dose_dates: list[date] = field(default_factory=list)
    #: Per-regimen override of the hold thresholds, analyte -> minimum count to proceed (10^9/L).
    hold_thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class Request:
    """What `assess` takes: the JSON request of docs/contracts.md, parsed and validated."""

    patient: Patient = field(default_factory=Patient)
    observations: list[Observation] = field(default_factory=list)
    medications: list[MedicationInput] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    symptoms: list[str] = field(default_factory=list)
    temperature_c: float | None = None
    fever_sustained_1h: bool = False
    anc_expected_to_fall: bool = False
    recurrent_infections: bool = False
    chemotherapy: Chemotherapy = field(default_factory=Chemotherapy)
    profile: str | None = None
    criteria: str = "ctcae-v5"
    mascc: dict[str, Any] = field(default_factory=dict)
    cisne: dict[str, Any] = field(default_factory=dict)
    #: What the reader of a lab message left out (an unreadable haemoglobin), carried into the
    #: Assessment's warnings so the caller is told, rather than a server log holding the value.
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Output


@dataclass
class Count:
    """One analyte's value at the current draw, with the range it was judged against."""

    analyte: str
    value: float
    unit: str
    flag: Flag
    derived: bool = False
    percent: float | None = None
    reference_range: ReferenceRange | None = None
    range_source: str = ""
    comparator: str | None = None
    time: datetime | None = None
    derivation: str | None = None
    low_source: str | None = None  # citation of the lower limit used (lab, or the profile row's source)
    high_source: str | None = None

    @property
    def per_uL(self) -> int | None:
        """The article speaks in cells/uL; 1 x10^9/L = 1,000 cells/uL."""
        if self.unit != "10^9/L":
            return None
        return round(self.value * 1000)


@dataclass
class Finding:
    """A low (or high) count, graded and worded with its rule, threshold and sources."""

    code: str
    analyte: str
    value: float
    unit: str
    grade: int | None
    criteria: str | None
    severity: str | None
    threshold: str
    rule: str
    source: str
    term: str | None = None
    notes: list[str] = field(default_factory=list)
    comparator: str | None = None  # the count was reported as a bound (below or above x): graded as just beyond it


@dataclass
class Alert:
    """Something to act on now (febrile neutropenia, a chemotherapy hold...), with its rule and source."""

    code: str
    level: AlertLevel
    message: str  # the clinician text (knowledge/alerts.toml `clinician`); label actions live here only
    rule: str = ""
    source: str = ""
    #: The patient text (alerts.toml `patient`): plain words, never an instruction to change a medicine.
    patient_message: str = ""
    variant: str = ""  # the alerts.toml row that fired (e.g. febrile_neutropenia "possible")


@dataclass
class MedicationMatch:
    """A medicine linked to low white cells, with the reason and the source of the link."""

    input: str
    generic: str
    drug_class: str
    classes: list[str]
    why: str
    source: str
    risk: str = "listed"
    chemotherapy: bool = False
    monitoring: str | None = None  # key into treatment.toml label tables (clozapine, deferiprone)
    start: date | None = None
    stop: date | None = None
    #: Also used outside cancer (methotrexate in arthritis...): "chemotherapy" only when the request says so.
    dual_use: bool = False
    #: Why this medicine is not a current cause ("stopped 2026-01-02", "mentioned as an allergy"), else None.
    not_current: str | None = None


@dataclass
class ConditionMatch:
    """A condition the article names as a cause, with its course (acute or chronic)."""

    input: str
    name: str
    category: str
    course: str  # acute | chronic | either, as the article tags it
    article_wording: str
    source: str


@dataclass
class Score:
    """A risk score (MASCC, CISNE); missing items are listed, never assumed."""

    name: str
    points: int
    max_points: int
    complete: bool
    risk: str | None
    items: dict[str, int]
    missing: list[str]
    interpretation: str
    source: str


@dataclass
class Chronicity:
    """Acute, chronic or undetermined for one analyte, with the results that decided it."""

    status: Literal["acute", "chronic", "undetermined"]
    analyte: str | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass
class Advice:
    """Plain-language advice for the person, chosen from advice.toml by what was found."""

    treatment: list[str] = field(default_factory=list)
    home_care: list[str] = field(default_factory=list)
    contact_doctor: list[str] = field(default_factory=list)


@dataclass
class Assessment:
    """Everything `assess` concludes about one blood count: the JSON contract of docs/contracts.md."""

    counts: dict[str, Count]
    findings: list[Finding]
    alerts: list[Alert]
    chronicity: Chronicity
    possible_causes: dict[str, list[Any]]
    advice: Advice
    profile: str
    criteria: str
    knowledge_version: str
    disclaimer: str
    verdict: str = ""
    patient_summary: list[str] = field(default_factory=list)
    clinician_summary: list[str] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patient: Patient | None = None
    time: datetime | None = None

    # Plain loops: the narrative asks these several times per assessment, and a generator costs more
    # than the search.
    def finding(self, code: str) -> Finding | None:
        for f in self.findings:
            if f.code == code:
                return f
        return None

    def alert(self, code: str) -> Alert | None:
        for a in self.alerts:
            if a.code == code:
                return a
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of docs/contracts.md (dates as ISO strings, counts with per_uL)."""
        return jsonable(self)


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(cls.__dataclass_fields__)
    return names


_FIELDS: dict[type, tuple[str, ...]] = {}
_JSON_NAME = {"drug_class": "class"}  # `class` is a Python keyword, but the contract's name


def jsonable(obj: Any) -> Any:
    """Dataclasses, dates and floats -> JSON-ready values (public: history and service use it too).

    Written as one type switch rather than `dataclasses.asdict`, which deep-copies every value and
    cost more than the assessment itself.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return round(obj, 6)  # hide binary noise (2.1 x 20 / 100 = 0.42000000000000004)
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    names = _field_names(type(obj)) if hasattr(obj, "__dataclass_fields__") else None
    if names is None:
        return obj
    out = {_JSON_NAME.get(k, k): jsonable(getattr(obj, k)) for k in names}
    if isinstance(obj, Count):
        out["per_uL"] = obj.per_uL
    return out


