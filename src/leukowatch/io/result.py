"""What every reader returns: accepted observations, the people and medicines around them, and
every input record that did not become an observation, with the reason.

Readers do not convert units or validate values themselves: each builds the project's JSON
observation dict and hands it to `Collector.offer`, which runs the same
`request.parse_observation` that `assess` uses. So a FHIR file, an HL7 message and a CSV row are
judged by one set of rules, and a rejected row carries the very message `assess` would give.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..model import CONTEXT_ANALYTES, InputError, MedicationInput, Observation, Patient
from ..request import parse_observation
from ..units import canonical_analyte, loinc_lookup

log = logging.getLogger("leukowatch.io")

RejectKind = Literal["invalid", "skipped"]
_RANGE = re.compile(r"^\s*(?:([<>]=?)\s*)?(\d+(?:\.\d+)?)\s*(?:(?:-|to|–)\s*(\d+(?:\.\d+)?))?\s*$", re.IGNORECASE)


def parse_range(text: str) -> dict[str, str] | None:
    """A range as labs write it: "4.0-11.0", "4300 to 10800", "<0.21", ">4" -> {"low", "high"}
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
    blood count, cancelled, pending, superseded); `invalid` = the data is wrong (unit, value)."""

    locator: str
    reason: str
    raw: str = ""
    kind: RejectKind = "invalid"
    analyte: str | None = None  # when known: decides whether `assess` may go on without it


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
        return (f"read {self.read} = accepted {self.accepted} + rejected {self.rejected} "
                f"({skipped} skipped, {self.rejected - skipped} invalid)")

    def extend(self, other: ReadResult) -> None:
        self.read += other.read
        self.items += other.items
        self.rejects += other.rejects
        self.patients += other.patients
        self.medications += other.medications
        self.conditions += other.conditions


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
                                              "invalid", _analyte_of(obs)))
            return None
        item = Item(parsed, locator, obs, source_key, source_id, line, status)
        self.result.items.append(item)
        return item

    def skip(self, locator: str, reason: str, raw: Any = "") -> None:
        self.result.read += 1
        self.result.rejects.append(Reject(locator, reason, _raw_text(raw), "skipped"))

    def invalid(self, locator: str, reason: str, raw: Any = "") -> None:
        self.result.read += 1
        self.result.rejects.append(Reject(locator, reason, _raw_text(raw), "invalid"))

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
                                                  _raw_text(item.raw), "skipped"))
            else:
                keep.append(item)
        self.result.items = keep


def _analyte_of(obs: dict[str, Any]) -> str | None:
    try:
        if isinstance(obs.get("analyte"), str):
            return canonical_analyte(obs["analyte"], "analyte")
    except InputError:
        return None
    entry = loinc_lookup(str(obs["code"])) if obs.get("code") is not None else None
    return entry.analyte if entry else None


def to_request(result: ReadResult) -> dict[str, Any]:
    """One person's read result as the project JSON request (what `assess` validates).

    A white-cell value that could not be read stops the assessment (dropping it would change the
    verdict); an unreadable context value (haemoglobin, platelets) is left out with a warning.
    """
    ids = {p.id for p in result.patients if p.id} | {i.observation.patient_id for i in result.items
                                                     if i.observation.patient_id}
    if len(ids) > 1:
        raise InputError(result.source, f"holds results of {len(ids)} patients; `leukowatch ingest` it and "
                                        "assess one patient from the store")
    for r in result.rejects:
        if r.kind != "invalid":
            continue
        if r.analyte not in CONTEXT_ANALYTES:
            raise InputError(r.locator, r.reason)
        log.warning("%s: %s (left out)", r.locator, r.reason)
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
    return request
