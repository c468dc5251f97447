"""What every reader returns: accepted observations, the people, medicines and measured body
temperatures around them, and every input record that did not become an observation, with the reason.

Readers do not convert units or validate values themselves: each builds the project's JSON
observation dict and hands it to `Collector.offer`, which runs the same
`request.parse_observation` that `assess` uses. So a FHIR file, an HL7 message and a CSV row are
judged by one set of rules, and a rejected row carries the very message `assess` would give.

Duplicates are defined here once (`RESULT_KEY`, `DUPLICATE_KEY`) for the readers and the
population screen, so `leukowatch read` and the screen count the same rows as duplicates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal, NamedTuple

from ..model import CONTEXT_ANALYTES, InputError, MedicationInput, Observation, Patient
from ..request import parse_datetime, parse_number, parse_observation
from ..units import (
    body_temperature_problem,
    canonical_analyte,
    celsius_text,
    fahrenheit_to_celsius,
    loinc_lookup,
    temperature_scale,
)


def lenient_date(value: Any) -> date | None:
    """A date from a date, date-time or ISO string; None when absent or unreadable. For optional
    context (a medicine's start/stop) where an unreadable date must not sink the lab result."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None

RejectKind = Literal["invalid", "skipped", "duplicate"]
_RANGE = re.compile(r"^\s*(?:([<>]=?)\s*)?(\d+(?:\.\d+)?)\s*(?:(?:-|to|–)\s*(\d+(?:\.\d+)?))?\s*$", re.IGNORECASE)


#: The identity of one result: one value per analyte (absolute or %) per person per draw time.
#: `rules.differential` uses the later of two such results (warning when the values differ), and the
#: population screen (`population.pipeline.latest_per_draw`) partitions by these very columns and
#: rejects the earlier ones with reason_code "duplicate".
RESULT_KEY: tuple[str, ...] = ("patient_id", "time", "analyte", "percent")
#: An *exact* duplicate: the same result again with the same value, unit and comparator, compared
#: after conversion to canonical units (so "3200 /uL" repeats "3.2 10*9/L"; the reference range and
#: the spelling of the code do not matter). The readers reject it as "duplicate of <first occurrence>";
#: these rows are a subset of the screen's "duplicate" rejects, so both count them alike. A same-draw
#: result with a *different* value is not exact: readers keep it (assess warns and uses the later one).
DUPLICATE_KEY: tuple[str, ...] = RESULT_KEY + ("value", "unit", "comparator")
#: Decimals kept when comparing values, so a unit conversion's float noise does not hide a duplicate.
_VALUE_DECIMALS = 9


def duplicate_key(obs: Observation) -> tuple[Any, ...]:
    """`DUPLICATE_KEY` of one observation: equal keys = exact duplicates."""
    return tuple(round(obs.value, _VALUE_DECIMALS) if name == "value" else getattr(obs, name)
                 for name in DUPLICATE_KEY)


def parse_range(text: str) -> dict[str, str] | None:
    """A range as labs write it: "4.0-11.0", "4300 to 10800", "<1", ">4" -> {"low", "high"}
    (strings, converted later with the value's unit). None when the text is not a range."""
    m = _RANGE.match(text or "")
    if not m:
        return None
    op, first, second = m.groups()
    if second is not None:
        return None if op else {"low": first, "high": second}
    if op and op.startswith("<"):
        return {"high": first}
    if op and op.startswith(">"):
        return {"low": first}
    return None


@dataclass
class Reject:
    """One input record that is not an observation. `skipped` = out of scope on purpose (not a
    blood count, cancelled, pending, superseded); `invalid` = the data is wrong (unit, value);
    `duplicate` = the same result again (`DUPLICATE_KEY`, or a record id seen before)."""

    locator: str
    reason: str
    raw: str = ""
    kind: RejectKind = "invalid"
    analyte: str | None = None  # when known: decides whether `assess` may go on without it
    patient_id: str | None = None  # when known: `assess --patient` ignores other people's rejects


#: The `Reject.analyte` of a temperature that could not be used: context, like haemoglobin, so `assess`
#: goes on without it (with a warning) rather than refusing the blood count beside it.
TEMPERATURE = "temperature"


class Temperature(NamedTuple):
    """A measured body temperature a lab file or EHR sent beside the counts (knowledge/temperature.toml).
    Not an observation: `to_request` makes the highest one on the day of the latest draw the request's
    `temperature_c`, and the store keeps them in its `temperatures` table for the population screen."""

    patient_id: str | None
    time: datetime
    celsius: float
    locator: str


@dataclass
class Item:
    """An accepted observation and where it came from."""

    observation: Observation
    locator: str
    raw: dict[str, Any]  # the project-JSON observation dict (what `assess` re-validates)
    source_key: str  # idempotency key: message control id / bundle+resource id / file sha256+row
    source_id: str | None = None
    line: int | None = None
    status: str | None = None


@dataclass
class ReadResult:
    format: str
    source: str
    read: int = 0
    items: list[Item] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    patients: list[Patient] = field(default_factory=list)
    medications: list[tuple[str | None, MedicationInput]] = field(default_factory=list)
    conditions: list[tuple[str | None, str]] = field(default_factory=list)
    #: Like medications and conditions, accepted temperatures are facts beside the results: not counted in
    #: `read`/`accepted`. One that cannot be used is a reject (counted in `read`), so the sums still hold.
    temperatures: list[Temperature] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.items)

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def observations(self) -> list[Observation]:
        return [i.observation for i in self.items]

    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected

    def summary(self) -> str:
        skipped = sum(r.kind == "skipped" for r in self.rejects)
        duplicates = sum(r.kind == "duplicate" for r in self.rejects)
        dup_text = f"{duplicates} duplicate, " if duplicates else ""
        temps = f"; {len(self.temperatures)} body temperature(s) beside them" if self.temperatures else ""
        return (f"read {self.read} = accepted {self.accepted} + rejected {self.rejected} "
                f"({skipped} skipped, {dup_text}{self.rejected - skipped - duplicates} invalid){temps}")

    def patient_ids(self) -> list[str]:
        """Every patient id in the input, in order of first appearance (people and results)."""
        ids = [p.id for p in self.patients if p.id] + [i.observation.patient_id for i in self.items
                                                        if i.observation.patient_id]
        return list(dict.fromkeys(ids))

    def for_patient(self, patient_id: str) -> ReadResult:
        """The part of this result that belongs to one person. Rejects whose person is unknown stay
        in (they might be this person's), so an unreadable white-cell row still stops `assess`."""
        out = ReadResult(self.format, self.source)
        out.items = [i for i in self.items if i.observation.patient_id == patient_id]
        out.rejects = [r for r in self.rejects if r.patient_id in (patient_id, None)]
        out.read = len(out.items) + len(out.rejects)
        out.patients = [p for p in self.patients if p.id == patient_id]
        out.medications = [m for m in self.medications if m[0] == patient_id]
        out.conditions = [c for c in self.conditions if c[0] == patient_id]
        out.temperatures = [t for t in self.temperatures if t.patient_id == patient_id]
        return out

    def extend(self, other: ReadResult) -> None:
        self.read += other.read
        self.items += other.items
        self.rejects += other.rejects
        self.patients += other.patients
        self.medications += other.medications
        self.conditions += other.conditions
        self.temperatures += other.temperatures


def _raw_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return json.dumps(raw, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(raw)


class Collector:
    """Counts records as a reader sees them and sorts each into accepted or rejected.

    `field_names` maps the request-dict field a parse error names (".unit") to the native locator
    suffix ("-6" for OBX-6), so errors speak the input's own language.
    """

    def __init__(self, fmt: str, source: str, field_names: dict[str, str] | None = None) -> None:
        self.result = ReadResult(fmt, source)
        self._field_names = field_names or {}
        self._record_ids: dict[str, str] = {}

    def native(self, locator: str, err: InputError) -> str:
        suffix = err.field[len(locator):] if err.field.startswith(locator) else ""
        for key in sorted(self._field_names, key=len, reverse=True):
            if suffix.startswith(key):
                return locator + self._field_names[key]
        return err.field

    def offer(self, obs: dict[str, Any], locator: str, *, patient_id: str | None, source_key: str,
              source_id: str | None = None, line: int | None = None, status: str | None = None,
              raw: Any = None) -> Item | None:
        self.result.read += 1
        try:
            parsed = parse_observation(obs, locator, patient_id)
        except InputError as err:
            self.result.rejects.append(Reject(self.native(locator, err), err.problem, _raw_text(raw or obs),
                                              "invalid", _analyte_of(obs), patient_id))
            return None
        item = Item(parsed, locator, obs, source_key, source_id, line, status)
        self.result.items.append(item)
        return item

    def skip(self, locator: str, reason: str, raw: Any = "", patient_id: str | None = None) -> None:
        self.result.read += 1
        self.result.rejects.append(Reject(locator, reason, _raw_text(raw), "skipped", patient_id=patient_id))

    def invalid(self, locator: str, reason: str, raw: Any = "", patient_id: str | None = None,
                analyte: str | None = None) -> None:
        self.result.read += 1
        self.result.rejects.append(Reject(locator, reason, _raw_text(raw), "invalid", analyte, patient_id))

    def temperature(self, value: Any, unit: str | None, time: Any, locator: str, *, patient_id: str | None,
                    raw: Any = "") -> None:
        """A body temperature as sent -> `result.temperatures` (in °C), or a reject with its reason: no
        time (it is matched to the day of the draw), a comparator, a unit that is no temperature scale,
        or a value no body has (units.toml plausibility)."""
        try:
            celsius, when = _temperature_c(value, unit, time, locator)
        except InputError as err:
            self.invalid(self.native(locator, err), err.problem, raw, patient_id, TEMPERATURE)
            return
        self.result.temperatures.append(Temperature(patient_id, when, celsius, locator))

    def first_seen(self, record_id: str, where: str) -> str | None:
        """Where the record with this id (FHIR Observation id, OMOP measurement_id) was first seen,
        or None the first time (then `where` is remembered). An id names one record, so a second
        record with it is a duplicate (see `duplicate`)."""
        first = self._record_ids.get(record_id)
        if first is None:
            self._record_ids[record_id] = where
        return first

    def duplicate(self, locator: str, first: str, raw: Any = "", patient_id: str | None = None,
                  why: str = "") -> None:
        """Reject a record that repeats an earlier one, naming where that one is."""
        self.result.read += 1
        self.result.rejects.append(Reject(locator, f"duplicate of {first}{why}", _raw_text(raw), "duplicate",
                                          patient_id=patient_id))

    def finish(self) -> ReadResult:
        """Every reader's last step: corrections replace what they correct, then exact duplicates go."""
        self.supersede_corrections()
        self.reject_duplicates()
        return self.result

    def reject_duplicates(self) -> None:
        """An accepted observation equal to an earlier one on `DUPLICATE_KEY` moves to the rejects,
        naming the first occurrence ("duplicate of line 3"); the first one stays."""
        first: dict[tuple[Any, ...], Item] = {}
        keep = []
        for item in self.result.items:
            earlier = first.setdefault(duplicate_key(item.observation), item)
            if earlier is item:
                keep.append(item)
            else:
                self.result.rejects.append(Reject(
                    item.locator, f"duplicate of {earlier.locator}: same patient, time, analyte, value and unit",
                    _raw_text(item.raw), "duplicate", patient_id=item.observation.patient_id))
        self.result.items = keep

    def supersede_corrections(self) -> None:
        """A corrected result (status C) replaces an earlier one for the same patient, analyte and
        time within the same input; the replaced one moves to the rejects with the reason."""
        corrected = {(i.observation.patient_id, i.observation.analyte, i.observation.percent, i.observation.time): i
                     for i in self.result.items if i.status == "C"}
        keep = []
        for item in self.result.items:
            o = item.observation
            winner = corrected.get((o.patient_id, o.analyte, o.percent, o.time))
            if winner is not None and winner is not item:
                self.result.rejects.append(Reject(item.locator, f"superseded by the corrected result {winner.locator}",
                                                  _raw_text(item.raw), "skipped", patient_id=o.patient_id))
            else:
                keep.append(item)
        self.result.items = keep


def _temperature_c(value: Any, unit: str | None, time: Any, locator: str) -> tuple[float, datetime]:
    """(°C, time) of one temperature as sent; InputError naming the locator and the problem."""
    if time is None or time == "":
        raise InputError(f"{locator}.time", "body temperature without a time: it is only used on the day of a "
                                            "blood draw, so an undated one cannot be placed")
    when = parse_datetime(time, f"{locator}.time")
    number, comparator = parse_number(value, f"{locator}.value")
    if comparator:
        raise InputError(f"{locator}.value", f"body temperature {value!r} has a comparator: not a measured value")
    scale = temperature_scale(unit)
    if scale is None:
        raise InputError(f"{locator}.unit", f"{unit!r} is not a temperature unit (Cel or [degF]); "
                                            "the scale is never guessed")
    celsius = fahrenheit_to_celsius(number) if scale == "fahrenheit" else number
    problem = body_temperature_problem(celsius, f"{number:g} {'°F' if scale == 'fahrenheit' else '°C'}")
    if problem is not None:
        raise InputError(f"{locator}.value", problem)
    return celsius, when


def _analyte_of(obs: dict[str, Any]) -> str | None:
    try:
        if isinstance(obs.get("analyte"), str):
            return canonical_analyte(obs["analyte"], "analyte")
    except InputError:
        return None
    entry = loinc_lookup(str(obs["code"])) if obs.get("code") is not None else None
    return entry.analyte if entry else None


#: Patient ids named in the "several patients" message.
_IDS_SHOWN = 5


def to_request(result: ReadResult, patient_id: str | None = None) -> dict[str, Any]:
    """One person's read result as the project JSON request (what `assess` validates).

    `patient_id` picks one person of a file that holds several (a CSV, an OMOP extract); without it
    the input must hold one person. A white-cell value that could not be read stops the assessment
    (dropping it would change the verdict); an unreadable context value (haemoglobin, platelets) is
    left out with a warning.
    """
    all_ids = result.patient_ids()
    shown = ", ".join(all_ids[:_IDS_SHOWN]) + (", ..." if len(all_ids) > _IDS_SHOWN else "")
    if patient_id is not None:
        if patient_id not in all_ids:
            raise InputError("--patient", f"no patient {patient_id!r} in {result.source} "
                                          f"(it holds: {shown or 'no patient ids'})")
        result = result.for_patient(patient_id)
    elif len(all_ids) > 1:
        raise InputError(result.source, f"holds results of {len(all_ids)} patients ({shown}); pick one with "
                                        "--patient ID (or `leukowatch ingest` it and use the store)")
    ids = set(result.patient_ids())
    left_out: list[str] = []
    for r in result.rejects:
        if r.kind != "invalid":
            continue
        if r.analyte not in CONTEXT_ANALYTES and r.analyte != TEMPERATURE:
            raise InputError(r.locator, r.reason)
        left_out.append(f"{r.locator}: {r.reason} (left out)")  # told to the caller, never logged (it quotes values)
    if not result.items:
        why = result.rejects[0].reason if result.rejects else "no observations"
        raise InputError(result.source, f"no blood count results to assess (first record: {why})")
    patient: dict[str, Any] = {}
    person = next((p for p in result.patients if p.id in ids or not ids), None)
    if person is not None:
        patient = {"id": person.id, "sex": person.sex}
        if person.birth_date:
            patient["birth_date"] = person.birth_date.isoformat()
    elif ids:
        patient = {"id": next(iter(ids))}
    request: dict[str, Any] = {"patient": patient, "observations": [i.raw for i in result.items]}
    if result.medications:
        request["medications"] = [{"name": m.name, "start": m.start and m.start.isoformat(),
                                   "stop": m.stop and m.stop.isoformat()} for _, m in result.medications]
    if result.conditions:
        request["conditions"] = [c for _, c in result.conditions]
    left_out += use_draw_day_temperature(request, result)
    if left_out:
        request["warnings"] = left_out
    return request


def utc_day(when: datetime) -> date:
    """The calendar day (UTC) of a time, as draws and temperatures are paired (a naive time is UTC)."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC).date()


def use_draw_day_temperature(request: dict[str, Any], result: ReadResult) -> list[str]:
    """`set_draw_day_temperature` with the result's draws and temperatures."""
    draws = [i.observation.time for i in result.items if i.observation.time is not None]
    return set_draw_day_temperature(request, draws, result.temperatures)


def set_draw_day_temperature(request: dict[str, Any], draws: list[datetime], temperatures: list[Temperature]) -> list[str]:
    """Set the request's `temperature_c` from `temperatures` (`draw_day_temperature`) and return the notes
    for the caller: one rule for a lab file and for a stored patient. A request that carries its own
    temperature keeps it."""
    if not temperatures or "temperature_c" in request or "temperature_f" in request:
        return []
    temperature_c, notes = draw_day_temperature(draws, temperatures)
    if temperature_c is not None:
        request["temperature_c"] = temperature_c
    return notes


def draw_day_temperature(draws: list[datetime], temperatures: list[Temperature]) -> tuple[float | None, list[str]]:
    """The highest temperature taken on the calendar day (UTC) of the latest blood draw, as the
    population screen and `demo validate` pair them (None when there is none), with the notes for the
    caller: which temperature, when; or why none was used. The notes quote values, so they go to the
    caller only, never to a log."""
    if not temperatures:
        return None, []
    if not draws:
        return None, [f"{len(temperatures)} body temperature(s) given, but no blood draw has a time: not used"]
    day = utc_day(max(draws))
    same_day = [t for t in temperatures if utc_day(t.time) == day]
    if not same_day:
        latest = max(temperatures, key=lambda t: t.time)
        return None, [f"body temperature {celsius_text(latest.celsius)} taken {latest.time.isoformat()} is not from "
                      f"{day.isoformat()}, the day of the latest blood draw: not used"]
    highest = max(same_day, key=lambda t: (t.celsius, t.time))
    of = f"the highest of {len(same_day)} " if len(same_day) > 1 else ""
    return highest.celsius, [f"measured temperature used: {celsius_text(highest.celsius)} taken "
                             f"{highest.time.isoformat()} ({highest.locator}), {of}on {day.isoformat()}, "
                             "the day of the latest blood draw"]
