"""The project's JSON request (docs/contracts.md) -> a validated `Request`.

Validation happens here, once, so that every entry point (CLI flags, JSON file, REST body, and the
FHIR/HL7 readers, which build the same dict shapes) reports a bad field the same way: the JSON path
and the problem, e.g. `observations[1].unit: unknown unit 'bananas/uL' for analyte 'wbc'`.

Inside a part (an observation, a medicine, the patient) errors name their field relative to it
(".unit") and the part's own path is put in front only when one is raised (`_under`): formatting
every path of every good field cost more than checking the fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from math import isfinite
from typing import Any, TypeVar

from .knowledge import derived
from .model import (
    Chemotherapy,
    InputError,
    MedicationInput,
    Observation,
    Patient,
    ReferenceRange,
    Request,
)
from .units import (
    body_temperature_problem,
    canonical_analyte,
    check_plausible,
    conversion,
    fahrenheit_to_celsius,
    loinc_lookup,
    plausibility,
    plausible_range,
)

T = TypeVar("T")

_TOP_LEVEL = {
    "patient", "observations", "medications", "conditions", "symptoms", "temperature_c", "temperature_f",
    "fever_sustained_1h", "anc_expected_to_fall", "recurrent_infections", "chemotherapy", "profile",
    "criteria", "mascc", "cisne", "resourceType", "warnings",
}
_SEXES = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female",
          "unknown": "unknown", "u": "unknown", "other": "unknown", "": "unknown"}
#: The comparators a value may start with, longest first (the population screen reads them alike).
COMPARATORS = ("<=", ">=", "<", ">")
_PLAIN_NUMBERS = (float, int)  # exact types, checked first; bool, an int subclass, is refused
#: How far after the time of reading a result may be dated (clocks of lab systems drift a little): the stores
#: refuse a later one, `assess` warns about it (a mistyped year would otherwise be read as the latest result).
FUTURE_SKEW = timedelta(minutes=5)
#: "1,500" or "150,000": a comma before exactly three digits may group thousands (as the article writes
#: "5,000-10,000/uL") or mark decimals (a European "1,500" = 1.5); never guessed. "0,500" can only be a decimal.
THOUSANDS_OR_DECIMAL = re.compile(r"[1-9]\d{0,2},\d{3}")


def in_the_future(when: datetime, now: datetime | None = None) -> bool:
    """`when` (naive: UTC) is later than now by more than FUTURE_SKEW."""
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware > (now or datetime.now(UTC)) + FUTURE_SKEW


def parse_datetime(value: Any, field: str) -> datetime:
    """ISO 8601 date or date-time; naive values are read as UTC so that times always compare."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(field, f"not an ISO 8601 date or date-time: {value!r}") from None
    else:
        raise InputError(field, f"expected an ISO 8601 date-time string, got {type(value).__name__}")
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def parse_date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise InputError(field, f"not an ISO 8601 date: {value!r}") from None
    raise InputError(field, f"expected an ISO 8601 date string, got {type(value).__name__}")


def parse_number(value: Any, field: str) -> tuple[float, str | None]:
    """A number, or a string with a comparator such as '<1' (the comparator is kept, never dropped)."""
    if type(value) in _PLAIN_NUMBERS or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        number = float(value)
        comparator = None
    elif isinstance(value, bool):
        raise InputError(field, "expected a number, got true/false")
    elif isinstance(value, str):
        text = value.strip()
        comparator = next((c for c in COMPARATORS if text.startswith(c)), None)
        if comparator:
            text = text[len(comparator):].strip()
        if text.count(",") == 1 and "." not in text:  # a decimal comma ("0,5"), unless it may group thousands
            if THOUSANDS_OR_DECIMAL.fullmatch(text):
                raise InputError(field, f"{value!r} is ambiguous: the comma may separate thousands "
                                        f"({text.replace(',', '')}) or decimals ({text.replace(',', '.')}); "
                                        "send the number without a thousands separator, with a decimal point")
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            raise InputError(field, f"not a number: {value!r}") from None
    elif value is None:
        raise InputError(field, "missing value")
    else:
        raise InputError(field, f"expected a number, got {type(value).__name__}")
    if not isfinite(number):
        raise InputError(field, "not a finite number")
    return number, comparator


def parse_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise InputError(field, f"expected true or false, got {value!r}")


def _under(prefix: str, err: InputError) -> InputError:
    """The same problem with its field put under `prefix` ("observations[2]" + ".unit")."""
    return InputError(prefix + err.field, err.problem)


def _each(raws: list[Any], parse: Callable[[Any], T], name: str) -> list[T]:
    """Parse every item of a list; an error names the item ("medications[3].stop")."""
    out: list[T] = []
    for raw in raws:
        try:
            out.append(parse(raw))
        except InputError as err:
            raise _under(f"{name}[{len(out)}]", err) from None
    return out


def parse_patient(raw: Any, field: str = "patient") -> Patient:
    try:
        return _patient(raw)
    except InputError as err:
        raise _under(field, err) from None


def _patient(raw: Any) -> Patient:
    if raw is None:
        return Patient()
    if not isinstance(raw, dict):
        raise InputError("", "expected an object")
    sex_raw = raw.get("sex", "unknown")
    sex = _SEXES.get(sex_raw.strip().lower()) if isinstance(sex_raw, str) else None
    if sex is None:
        raise InputError(".sex", f"expected male, female or unknown, got {sex_raw!r}")
    age = raw.get("age_years")
    if age is not None:
        age, _ = parse_number(age, ".age_years")
        if not 0 <= age < 130:
            raise InputError(".age_years", f"age {age:g} is outside 0-130 years")
    birth = parse_date(raw.get("birth_date"), ".birth_date")
    pid = raw.get("id")
    duffy_null = parse_bool(raw.get("duffy_null", False), ".duffy_null")
    return Patient(None if pid is None else str(pid), sex, age, birth, duffy_null)  # type: ignore[arg-type]


def parse_observation(raw: Any, field: str, patient_id: str | None = None) -> Observation:
    """One observation by `analyte` or LOINC `code`, converted to canonical units and checked."""
    try:
        return _observation(raw, patient_id)
    except InputError as err:
        raise _under(field, err) from None


#: What an observation's analyte (or LOINC code) and unit spelling mean: (analyte, canonical unit,
#: percent, factor, lowest and highest plausible converted value).
_Kind = tuple[str, str, bool, float, float, float]


def _observation(raw: Any, patient_id: str | None = None) -> Observation:
    if not isinstance(raw, dict):
        raise InputError("", "expected an object with analyte (or code), value and unit")
    code, unit = raw.get("code"), raw.get("unit")
    try:
        kind = _kind(raw.get("analyte"), code, unit)
    except TypeError:  # an unhashable field; _kind_in_order says what is wrong with it
        kind = None
    if kind is None:
        kind = _kind_in_order(raw)
    analyte, canonical_unit, percent, factor, low, high = kind
    value = raw.get("value")
    if type(value) in _PLAIN_NUMBERS and isfinite(value):  # the usual JSON number: nothing to parse
        value, comparator = float(value), None
    else:
        value, comparator = parse_number(value, ".value")
    value *= factor
    if not low <= value <= high:
        check_plausible(analyte, value, percent, ".value")
    rr = raw.get("reference_range")
    time = raw.get("time")
    return Observation(
        analyte, value, canonical_unit, percent, parse_datetime(time, ".time") if time else None,
        None if rr is None else _reference_range(rr, factor), comparator, patient_id, raw.get("source"),
        None if code is None else str(code), str(unit), raw.get("flag"),
    )


@derived(maxsize=4096)
def _kind(name: Any, code: Any, unit: Any) -> _Kind | None:
    """The kind of an (analyte or code, unit) a lab sends, worked out once; None when something is
    wrong with it (then `_kind_in_order` raises the problem, quoting the fields as given). Only text
    names a valid kind, so keys that are equal across types (1, 1.0, True) all mean None."""
    try:
        analyte, percent_code = _measured(name, code)
        return _converted(analyte, percent_code, code, unit)
    except InputError:
        return None


def _kind_in_order(raw: dict[str, Any]) -> _Kind:
    """`_kind`, raising the first problem in the order a reader meets the fields: the analyte or
    code, then the value, then the unit."""
    analyte, percent_code = _measured(raw.get("analyte"), raw.get("code"))
    parse_number(raw.get("value"), ".value")
    return _converted(analyte, percent_code, raw.get("code"), raw.get("unit"))


def _measured(name: Any, code: Any) -> tuple[str, bool | None]:
    """The analyte, and for a LOINC code whether it is the percentage form."""
    if name is not None:
        if not isinstance(name, str):
            raise InputError(".analyte", "expected a string")
        analyte = canonical_analyte(name, ".analyte")
        return analyte, _agreeing_code(analyte, code)
    if code is not None:
        entry = loinc_lookup(str(code))
        if entry is None:
            raise InputError(".code", f"LOINC code {code!r} is not a blood count code leukowatch reads")
        return entry.analyte, entry.percent
    raise InputError("", "needs an 'analyte' or a LOINC 'code'")


def _agreeing_code(analyte: str, code: Any) -> bool | None:
    """For an observation that names both an analyte and a code: whether a LOINC code is the
    percentage form (so its unit is checked too), None for a code leukowatch does not know (a lab's
    local code rides along). A LOINC code of another analyte is an error, because guessing which of
    the two the lab meant could grade a WBC as an ANC."""
    entry = None if code is None else loinc_lookup(str(code))
    if entry is None:
        return None
    if entry.analyte != analyte:
        raise InputError(".code", f"LOINC {code} is {entry.analyte}, but the analyte is {analyte!r}")
    return entry.percent


def _converted(analyte: str, percent_code: bool | None, code: Any, unit: Any) -> _Kind:
    rule = conversion(analyte, unit, ".unit")
    if percent_code is not None and percent_code != rule.percent:
        expected = "a percentage (%)" if percent_code else "an absolute count unit"
        raise InputError(".unit", f"LOINC {code} is {expected} but the unit is {unit!r}")
    low, high = plausible_range(analyte, rule.percent)
    return analyte, rule.unit, rule.percent, rule.factor, low, high


def _reference_range(rr: Any, factor: float) -> ReferenceRange:
    """A lab's own range, in the unit of its value (hence the value's factor)."""
    if not isinstance(rr, dict):
        raise InputError(".reference_range", "expected an object with low and/or high")
    low = _bound(rr.get("low"), factor, ".reference_range.low")
    high = _bound(rr.get("high"), factor, ".reference_range.high")
    if low is not None and high is not None and low > high:
        raise InputError(".reference_range", "low is above high")
    return ReferenceRange(low, high)


def _bound(raw: Any, factor: float, field: str) -> float | None:
    if raw is None:
        return None
    number, _ = parse_number(raw, field)
    return number * factor


def parse_medication(raw: Any, field: str) -> MedicationInput:
    try:
        return _medication(raw)
    except InputError as err:
        raise _under(field, err) from None


def _medication(raw: Any) -> MedicationInput:
    if isinstance(raw, str):
        name = raw.strip()
        if not name:
            raise InputError("", "empty medicine name")
        return MedicationInput(name)
    if isinstance(raw, dict):
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(".name", "expected a medicine name")
        start = parse_date(raw.get("start"), ".start")
        stop = parse_date(raw.get("stop"), ".stop")
        if start and stop and stop < start:
            raise InputError(".stop", "stop date is before start date")
        return MedicationInput(name.strip(), start, stop)
    raise InputError("", "expected a medicine name or an object with name, start, stop")


def _string_list(raw: Any, field: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise InputError(field, "expected a list of strings")
    out = []
    for x in raw:
        if not isinstance(x, str):
            raise InputError(field, "expected a list of strings")
        x = x.strip()
        if x:
            out.append(x)
    return out


def parse_chemotherapy(raw: Any, field: str = "chemotherapy") -> Chemotherapy:
    if raw is None:
        return Chemotherapy()
    if isinstance(raw, bool):
        return Chemotherapy(active=raw)
    if not isinstance(raw, dict):
        raise InputError(field, "expected an object such as {\"active\": true, \"last_dose\": \"2026-11-10\"}")
    doses = [parse_date(d, f"{field}.dose_dates[{i}]") for i, d in enumerate(raw.get("dose_dates") or [])]
    thresholds: dict[str, float] = {}
    for key, val in (raw.get("hold_thresholds") or {}).items():
        name = canonical_analyte(key, f"{field}.hold_thresholds.{key}")
        thresholds[name], _ = parse_number(val, f"{field}.hold_thresholds.{key}")
    last = parse_date(raw.get("last_dose"), f"{field}.last_dose")
    regimen = raw.get("regimen")
    return Chemotherapy(
        active=parse_bool(raw.get("active", bool(last or doses)), f"{field}.active"),
        last_dose=last,
        regimen=None if regimen is None else str(regimen),
        dose_dates=[d for d in doses if d is not None],
        hold_thresholds=thresholds,
    )


def parse_temperature(celsius: Any, fahrenheit: Any) -> float | None:
    """A body temperature in °C from `temperature_c` or `temperature_f`; a value that is no body
    temperature is an error naming the field, and a "°C" of 90-110 is named as likely Fahrenheit
    (a fever of 100.4 °F read as °C would otherwise be refused without a hint, or worse, accepted)."""
    if celsius is None and fahrenheit is None:
        return None
    if celsius is not None and fahrenheit is not None:
        raise InputError("temperature_f", "give temperature_c or temperature_f, not both")
    if celsius is not None:
        field, (value, _) = "temperature_c", parse_number(celsius, "temperature_c")
        temperature = value
    else:
        field, (value, _) = "temperature_f", parse_number(fahrenheit, "temperature_f")
        temperature = fahrenheit_to_celsius(value)
    problem = body_temperature_problem(temperature, f"{value:g} {'°C' if field == 'temperature_c' else '°F'}")
    if problem is None:
        return temperature
    limits = plausibility()
    if field == "temperature_c" and limits["fahrenheit_low"] <= value <= limits["fahrenheit_high"]:
        problem += f"; {value:g} looks like degrees Fahrenheit: send it as temperature_f (or --temp-f)"
    raise InputError(field, problem)


#: A birth date may be this far past today's UTC date (a birth today, east of UTC).
_BIRTH_SKEW = timedelta(days=1)


def check_born(patient: Patient, observations: list[Observation]) -> None:
    """A birth date in the future, or after a result, is an error: the age it gives is negative, and
    no age band matches a negative age, so the count would silently be judged as an adult's."""
    birth = patient.birth_date
    if birth is None:
        return
    if birth > datetime.now(UTC).date() + _BIRTH_SKEW:
        raise InputError("patient.birth_date", f"{birth.isoformat()} is in the future")
    for i, obs in enumerate(observations):
        if obs.time is not None and obs.time.date() < birth:
            raise InputError(f"observations[{i}].time",
                             f"{obs.time.date().isoformat()} is before the patient's birth_date {birth.isoformat()}")


def parse_request(raw: Any) -> Request:
    """Validate a request dict; raises InputError naming the first bad field."""
    if not isinstance(raw, dict):
        raise InputError("$", "expected a JSON object with 'observations'")
    if not _TOP_LEVEL.issuperset(raw):
        unknown = sorted(set(raw) - _TOP_LEVEL)
        raise InputError(unknown[0], f"unknown field; expected one of: {', '.join(sorted(_TOP_LEVEL - {'resourceType'}))}")
    patient = parse_patient(raw.get("patient"))
    obs_raw = raw.get("observations")
    if not isinstance(obs_raw, list) or not obs_raw:
        raise InputError("observations", "expected a non-empty list of observations")
    observations = _each(obs_raw, _observation, "observations")
    check_born(patient, observations)
    if patient.id is not None:  # set here rather than passed to each: a closure per item costs more
        for obs in observations:
            obs.patient_id = patient.id
    meds_raw = raw.get("medications") or []
    if not isinstance(meds_raw, list):
        raise InputError("medications", "expected a list")
    temperature = parse_temperature(raw.get("temperature_c"), raw.get("temperature_f"))
    for key in ("mascc", "cisne"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise InputError(key, "expected an object of score items")
    return Request(
        patient=patient,
        observations=observations,
        medications=_each(meds_raw, _medication, "medications"),
        conditions=_string_list(raw.get("conditions"), "conditions"),
        symptoms=_string_list(raw.get("symptoms"), "symptoms"),
        temperature_c=temperature,
        fever_sustained_1h=parse_bool(raw.get("fever_sustained_1h", False), "fever_sustained_1h"),
        anc_expected_to_fall=parse_bool(raw.get("anc_expected_to_fall", False), "anc_expected_to_fall"),
        recurrent_infections=parse_bool(raw.get("recurrent_infections", False), "recurrent_infections"),
        chemotherapy=parse_chemotherapy(raw.get("chemotherapy")),
        profile=raw.get("profile"),
        criteria=raw.get("criteria") or "ctcae-v5",
        mascc=raw.get("mascc") or {},
        cisne=raw.get("cisne") or {},
        notes=_string_list(raw.get("warnings"), "warnings"),
    )
