"""The project's JSON request (DESIGN.md § Contracts) -> a validated `Request`.

Validation happens here, once, so that every entry point (CLI flags, JSON file, REST body, and the
FHIR/HL7 readers, which build the same dict shapes) reports a bad field the same way: the JSON path
and the problem, e.g. `observations[1].unit: unknown unit 'bananas/uL' for analyte 'wbc'`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from .model import (
    Chemotherapy,
    InputError,
    MedicationInput,
    Observation,
    Patient,
    ReferenceRange,
    Request,
)
from .units import canonical_analyte, check_plausible, convert, loinc_lookup, plausibility

_TOP_LEVEL = {
    "patient", "observations", "medications", "conditions", "symptoms", "temperature_c", "temperature_f",
    "fever_sustained_1h", "anc_expected_to_fall", "recurrent_infections", "chemotherapy", "profile",
    "criteria", "mascc", "cisne", "resourceType",
}
_SEXES = {"male": "male", "m": "male", "man": "male", "female": "female", "f": "female", "woman": "female",
          "unknown": "unknown", "u": "unknown", "other": "unknown", "": "unknown"}
_COMPARATORS = ("<=", ">=", "<", ">")


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
    if isinstance(value, bool):
        raise InputError(field, "expected a number, got true/false")
    if isinstance(value, (int, float)):
        number = float(value)
        comparator = None
    elif isinstance(value, str):
        text = value.strip().replace(",", ".") if value.count(",") == 1 and "." not in value else value.strip()
        comparator = next((c for c in _COMPARATORS if text.startswith(c)), None)
        if comparator:
            text = text[len(comparator):].strip()
        try:
            number = float(text)
        except ValueError:
            raise InputError(field, f"not a number: {value!r}") from None
    elif value is None:
        raise InputError(field, "missing value")
    else:
        raise InputError(field, f"expected a number, got {type(value).__name__}")
    if number != number or number in (float("inf"), float("-inf")):
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


def parse_patient(raw: Any, field: str = "patient") -> Patient:
    if raw is None:
        return Patient()
    if not isinstance(raw, dict):
        raise InputError(field, "expected an object")
    sex_raw = raw.get("sex", "unknown")
    if not isinstance(sex_raw, str) or sex_raw.strip().lower() not in _SEXES:
        raise InputError(f"{field}.sex", f"expected male, female or unknown, got {sex_raw!r}")
    age = raw.get("age_years")
    if age is not None:
        age, _ = parse_number(age, f"{field}.age_years")
        if not 0 <= age < 130:
            raise InputError(f"{field}.age_years", f"age {age:g} is outside 0-130 years")
    birth = parse_date(raw.get("birth_date"), f"{field}.birth_date")
    pid = raw.get("id")
    return Patient(
        id=None if pid is None else str(pid),
        sex=_SEXES[sex_raw.strip().lower()],  # type: ignore[arg-type]
        age_years=age,
        birth_date=birth,
        duffy_null=parse_bool(raw.get("duffy_null", False), f"{field}.duffy_null"),
    )


def parse_observation(raw: Any, field: str, patient_id: str | None = None) -> Observation:
    """One observation by `analyte` or LOINC `code`, converted to canonical units and checked."""
    if not isinstance(raw, dict):
        raise InputError(field, "expected an object with analyte (or code), value and unit")
    percent_code: bool | None = None
    code = raw.get("code")
    if raw.get("analyte") is not None:
        if not isinstance(raw["analyte"], str):
            raise InputError(f"{field}.analyte", "expected a string")
        analyte = canonical_analyte(raw["analyte"], f"{field}.analyte")
    elif code is not None:
        entry = loinc_lookup(str(code))
        if entry is None:
            raise InputError(f"{field}.code", f"LOINC code {code!r} is not a blood count code leukowatch reads")
        analyte, percent_code = entry.analyte, entry.percent
    else:
        raise InputError(field, "needs an 'analyte' or a LOINC 'code'")
    value, comparator = parse_number(raw.get("value"), f"{field}.value")
    unit = raw.get("unit")
    converted = convert(analyte, value, unit, f"{field}.unit")
    if percent_code is not None and percent_code != converted.percent:
        expected = "a percentage (%)" if percent_code else "an absolute count unit"
        raise InputError(f"{field}.unit", f"LOINC {code} is {expected} but the unit is {unit!r}")
    check_plausible(analyte, converted.value, converted.percent, f"{field}.value")
    rng = None
    if raw.get("reference_range") is not None:
        rr = raw["reference_range"]
        if not isinstance(rr, dict):
            raise InputError(f"{field}.reference_range", "expected an object with low and/or high")
        bounds = {}
        for side in ("low", "high"):
            if rr.get(side) is not None:
                number, _ = parse_number(rr[side], f"{field}.reference_range.{side}")
                bounds[side] = number * converted.factor
        if "low" in bounds and "high" in bounds and bounds["low"] > bounds["high"]:
            raise InputError(f"{field}.reference_range", "low is above high")
        rng = ReferenceRange(bounds.get("low"), bounds.get("high"))
    time = parse_datetime(raw["time"], f"{field}.time") if raw.get("time") else None
    return Observation(
        analyte=analyte, value=converted.value, unit=converted.unit, percent=converted.percent, time=time,
        reference_range=rng, comparator=comparator, patient_id=patient_id,
        source=raw.get("source"), code=None if code is None else str(code), original_unit=str(unit),
        lab_flag=raw.get("flag"),
    )


def parse_medication(raw: Any, field: str) -> MedicationInput:
    if isinstance(raw, str):
        if not raw.strip():
            raise InputError(field, "empty medicine name")
        return MedicationInput(raw.strip())
    if isinstance(raw, dict):
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{field}.name", "expected a medicine name")
        start = parse_date(raw.get("start"), f"{field}.start")
        stop = parse_date(raw.get("stop"), f"{field}.stop")
        if start and stop and stop < start:
            raise InputError(f"{field}.stop", "stop date is before start date")
        return MedicationInput(name.strip(), start, stop)
    raise InputError(field, "expected a medicine name or an object with name, start, stop")


def _string_list(raw: Any, field: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise InputError(field, "expected a list of strings")
    return [x.strip() for x in raw if x.strip()]


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


def parse_request(raw: Any) -> Request:
    """Validate a request dict; raises InputError naming the first bad field."""
    if not isinstance(raw, dict):
        raise InputError("$", "expected a JSON object with 'observations'")
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise InputError(unknown[0], f"unknown field; expected one of: {', '.join(sorted(_TOP_LEVEL - {'resourceType'}))}")
    patient = parse_patient(raw.get("patient"))
    obs_raw = raw.get("observations")
    if not isinstance(obs_raw, list) or not obs_raw:
        raise InputError("observations", "expected a non-empty list of observations")
    observations = [parse_observation(o, f"observations[{i}]", patient.id) for i, o in enumerate(obs_raw)]
    meds_raw = raw.get("medications") or []
    if not isinstance(meds_raw, list):
        raise InputError("medications", "expected a list")
    temperature = None
    if raw.get("temperature_c") is not None:
        temperature, _ = parse_number(raw["temperature_c"], "temperature_c")
    elif raw.get("temperature_f") is not None:
        fahrenheit, _ = parse_number(raw["temperature_f"], "temperature_f")
        temperature = (fahrenheit - 32.0) * 5.0 / 9.0
    limits = plausibility()
    if temperature is not None and not limits["min_body_temp_c"] <= temperature <= limits["max_body_temp_c"]:
        raise InputError("temperature_c", f"{temperature:g} °C is not a body temperature (expected "
                                          f"{limits['min_body_temp_c']:g}-{limits['max_body_temp_c']:g} °C)")
    for key in ("mascc", "cisne"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise InputError(key, "expected an object of score items")
    return Request(
        patient=patient,
        observations=observations,
        medications=[parse_medication(m, f"medications[{i}]") for i, m in enumerate(meds_raw)],
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
    )
