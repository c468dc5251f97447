"""FHIR R4 JSON -> observations, patients, medicines and conditions, via `fhir.resources` models.

Each resource is validated by the R4 model on its own, so one malformed entry in a 500-entry
bundle becomes one reject naming its JSON path instead of sinking the whole bundle. Times follow
the chain the standard intends: Observation.effective[x], else the DiagnosticReport's
effective[x] (the HL7 "CBC 101" example has no effective on its Observations), else issued.
Units are read from the UCUM `code` first (machine-readable), then the display `unit`.
An Observation id that appears twice in a bundle (same meta.versionId) is read once; the second
entry is rejected as "duplicate of entry[i].resource", as is a second identical result.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from typing import Any

from ..model import InputError, MedicationInput, Patient
from ..units import body_temperature_code, canonical_analyte, loinc_lookup
from .result import Collector, ReadResult, lenient_date, parse_range

try:  # fhir.resources 8 keeps R4 (as R4B) in a sub-package; its top level is R5
    from fhir.resources.R4B import get_fhir_model_class
except ImportError:  # pragma: no cover - older fhir.resources whose top level is R4
    from fhir.resources import get_fhir_model_class

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
_SKIP_STATUS = {"entered-in-error": "entered in error", "cancelled": "cancelled"}
_NO_VALUE_STATUS = {"registered": "registered, no result yet", "preliminary": "preliminary, no value"}
_READ_TYPES = {"Patient", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement",
               "Condition", "Medication"}
_FIELD = {".unit": ".valueQuantity.unit", ".value": ".valueQuantity.value", ".code": ".code",
          ".reference_range": ".referenceRange[0]", ".time": ".effectiveDateTime"}


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate(resource: Any, path: str) -> Any:
    """The R4 model of one resource, or InputError naming the JSON path of the first problem."""
    if not isinstance(resource, dict):
        raise InputError(path, "expected a FHIR resource (a JSON object)")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise InputError(f"{path}.resourceType", "missing resourceType")
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        raise InputError(f"{path}.resourceType", f"unknown FHIR resource type {rtype!r}") from None
    try:
        return model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError, or what a bad value makes a validator raise
        errors = getattr(exc, "errors", None)
        if callable(errors):
            try:
                first = errors()[0]
                return _raise(f"{path}{_loc(tuple(first.get('loc', ())))}", str(first.get("msg", "invalid")))
            except InputError:
                raise
            except Exception:
                pass
        raise InputError(path, f"not a valid FHIR R4 {rtype} ({exc.__class__.__name__})") from None


def _raise(field: str, problem: str) -> Any:
    raise InputError(field, problem)


def read_fhir_json(text: str, source: str = "<fhir>") -> ReadResult:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InputError(source, "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError("$", "expected a FHIR resource (a JSON object with resourceType)")
    return read_fhir(data, source, hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16])


def read_fhir(data: dict[str, Any], source: str = "<fhir>", digest: str = "") -> ReadResult:
    """A Bundle, DiagnosticReport, Observation or Patient (as parsed JSON) -> ReadResult."""
    reader = _Reader(source, digest)
    if data.get("resourceType") == "Bundle":
        reader.bundle(data)
    else:
        model = validate(data, "$")
        reader.add(model, "$", None)
        reader.finish()
    return reader.col.finish()


def _ref_key(reference: str | None) -> str | None:
    """'Patient/p1', 'https://x/Patient/p1', 'urn:uuid:u' -> a key that fullUrls map to."""
    return reference.strip() if reference else None


def _ref_id(reference: str | None) -> str | None:
    if not reference:
        return None
    ref = reference.strip()
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        return ref.split(":", 2)[2]
    return ref.rstrip("/").split("/")[-1] or None


def _iso_time(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value:
        return value if len(value) >= 10 else None  # partial dates (2005-07) are not a draw time
    return None


def _effective(res: Any) -> str | None:
    for attr in ("effectiveDateTime", "effectiveInstant"):
        t = _iso_time(getattr(res, attr, None))
        if t:
            return t
    period = getattr(res, "effectivePeriod", None)
    return _iso_time(period.start) if period is not None else None


def _concept_text(concept: Any) -> str | None:
    if concept is None:
        return None
    if concept.text:
        return str(concept.text)
    for coding in concept.coding or []:
        if coding.display or coding.code:
            return str(coding.display or coding.code)
    return None


class _Reader:
    def __init__(self, source: str, digest: str) -> None:
        self.col = Collector("fhir", source, _FIELD)
        self.source = source
        self.bundle_key = digest or source
        self.patients: dict[str, Patient] = {}  # reference key -> patient
        self.report_time: dict[str, str] = {}  # observation reference key -> report time
        self.medications: dict[str, str] = {}  # Medication reference key -> name
        self.pending: list[tuple[Any, str, str | None]] = []  # (resource, path, fullUrl) in order

    # -- collection ------------------------------------------------------------------------
    def bundle(self, data: dict[str, Any]) -> None:
        if data.get("id"):
            self.bundle_key = str(data["id"])
        entries = data.get("entry") or []
        if not isinstance(entries, list):
            raise InputError("entry", "expected a list of bundle entries")
        for i, entry in enumerate(entries):
            path = f"entry[{i}].resource"
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                self.col.invalid(f"entry[{i}]", "bundle entry without a resource", entry)
                continue
            rtype = entry["resource"].get("resourceType")
            if not isinstance(rtype, str):
                self.col.invalid(f"{path}.resourceType", "missing or not a string", entry)
                continue
            if rtype not in _READ_TYPES:
                continue  # Encounter, Claim, Organization...: not lab data, not counted as a result
            try:
                model = validate(entry["resource"], path)
            except InputError as err:
                if rtype == "Observation":
                    self.col.invalid(err.field, err.problem, entry["resource"])
                    continue
                raise
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            self.add(model, path, full_url)
        self.finish()

    def _keys(self, res: Any, full_url: str | None) -> list[str]:
        keys = [f"{res.get_resource_type()}/{res.id}"] if res.id else []
        if full_url:
            keys.append(full_url)
        return keys

    def add(self, res: Any, path: str, full_url: str | None) -> None:
        """First pass: index patients, medicines and report times; results are read in `finish`."""
        rtype = res.get_resource_type()
        if rtype == "Patient":
            birth = res.birthDate if isinstance(res.birthDate, date) else None
            sex = {"male": "male", "female": "female"}.get(str(res.gender or ""), "unknown")
            patient = Patient(id=res.id or _ref_id(full_url), sex=sex, birth_date=birth)  # type: ignore[arg-type]
            for key in self._keys(res, full_url):
                self.patients[key] = patient
            self.col.result.patients.append(patient)
        elif rtype == "Medication":
            name = _concept_text(res.code)
            for key in self._keys(res, full_url):
                if name:
                    self.medications[key] = name
        elif rtype == "DiagnosticReport":
            if res.status in _SKIP_STATUS:
                return
            when = _effective(res) or _iso_time(res.issued)
            for i, contained in enumerate(res.contained or []):
                if contained.get_resource_type() == "Observation":
                    self.pending.append((contained, f"{path}.contained[{i}]", f"#{contained.id}"))
            for ref in res.result or []:
                if when and ref.reference:
                    self.report_time[ref.reference] = when
                    self.report_time[ref.reference.split("/")[-1]] = when  # relative vs absolute urls
        self.pending.append((res, path, full_url))

    def finish(self) -> None:
        for res, path, full_url in self.pending:
            rtype = res.get_resource_type()
            if rtype == "Observation":
                self.observation(res, path, full_url)
            elif rtype in ("MedicationRequest", "MedicationStatement"):
                self.medication(res)
            elif rtype == "Condition":
                self.condition(res)
        self.pending = []

    # -- resources ---------------------------------------------------------------------------
    def patient_id(self, subject: Any) -> str | None:
        if subject is None or not subject.reference:
            return None
        patient = self.patients.get(subject.reference)
        return patient.id if patient is not None else _ref_id(subject.reference)

    def _time(self, res: Any, full_url: str | None) -> str | None:
        own = _effective(res)
        if own:
            return own
        for key in (full_url, f"Observation/{res.id}" if res.id else None, res.id):
            if key and key in self.report_time:
                return self.report_time[key]
        return _iso_time(res.issued)

    def observation(self, res: Any, path: str, full_url: str | None) -> None:
        rid = f"Observation/{res.id}" if res.id else path
        raw = res.model_dump(mode="json", exclude={"text"})
        pid = self.patient_id(res.subject)
        if res.status in _SKIP_STATUS:
            self.col.skip(f"{path}.status", f"observation {_SKIP_STATUS[res.status]}", raw, pid)
            return
        if res.id and ".contained[" not in path:  # contained ids are local to their container
            version = res.meta.versionId if res.meta is not None else None
            first = self.col.first_seen(f"{rid}/_history/{version or ''}", path)
            if first is not None:
                self.col.duplicate(path, first, raw, pid, f" (the same {rid} again)")
                return
        time = self._time(res, full_url)
        if res.component and res.valueQuantity is None:
            for i, comp in enumerate(res.component):
                self._value(comp, f"{path}.component[{i}]", f"{rid}.component[{i}]", pid, time, res, raw)
            return
        if res.hasMember and res.valueQuantity is None and res.valueString is None:
            self.col.skip(path, "panel: its member observations are read instead", raw, pid)
            return
        self._value(res, path, rid, pid, time, res, raw)

    def _value(self, holder: Any, path: str, rid: str, pid: str | None, time: str | None, parent: Any,
               raw: Any) -> None:
        if _is_body_temperature(holder.code):
            q = holder.valueQuantity
            value = None if q is None or q.value is None else float(q.value)
            self.col.temperature(f"{q.comparator}{value}" if q is not None and q.comparator else value,
                                 None if q is None else _unit(q), time, path, patient_id=pid, raw=raw)
            return
        mapping, how = _map_concept(holder.code)
        if mapping is None:
            self.col.skip(f"{path}.code", how, raw, pid)
            return
        q = holder.valueQuantity
        if q is not None:
            if q.value is None:
                self.col.invalid(f"{path}.valueQuantity.value", "quantity without a value", raw, pid)
                return
            value: Any = f"{q.comparator}{q.value}" if q.comparator else float(q.value)
            unit = _unit(q)
        elif holder.valueString is not None:
            value, unit = holder.valueString, None
        elif getattr(holder, "valueInteger", None) is not None:
            value, unit = holder.valueInteger, None
        else:
            absent = _concept_text(getattr(holder, "dataAbsentReason", None))
            status = getattr(parent, "status", None)
            if absent or status in _NO_VALUE_STATUS:
                self.col.skip(f"{path}.value[x]", f"no value ({absent or _NO_VALUE_STATUS[status]})", raw, pid)
            else:
                kind = next((k for k in ("valueCodeableConcept", "valueBoolean", "valueRange", "valueRatio",
                                         "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")
                             if getattr(holder, k, None) is not None), None)
                self.col.invalid(f"{path}.value[x]", f"{kind or 'missing value'}: not a count", raw, pid)
            return
        obs: dict[str, Any] = {**mapping, "value": value, "unit": unit, "source": f"{self.bundle_key}:{rid}"}
        if time:
            obs["time"] = time
        rng = _reference_range(holder.referenceRange)
        if rng:
            obs["reference_range"] = rng
        flag = next((c.code for i in (holder.interpretation or []) for c in (i.coding or []) if c.code), None)
        if flag:
            obs["flag"] = flag
        status = {"corrected": "C", "amended": "C", "preliminary": "P", "final": "F"}.get(str(parent.status))
        self.col.offer(obs, path, patient_id=pid, source_key=f"fhir:{self.bundle_key}:{rid}",
                       source_id=rid, status=status, raw=raw)

    def medication(self, res: Any) -> None:
        if res.status in ("entered-in-error", "cancelled", "not-taken"):
            return
        name = _concept_text(res.medicationCodeableConcept)
        if name is None and res.medicationReference is not None:
            name = self.medications.get(res.medicationReference.reference or "")
        if not name:
            return
        start = stop = None
        if res.get_resource_type() == "MedicationStatement":
            period = res.effectivePeriod
            start = period.start if period is not None else res.effectiveDateTime
            stop = period.end if period is not None else None
        else:
            for dose in res.dosageInstruction or []:
                bounds = dose.timing.repeat.boundsPeriod if dose.timing and dose.timing.repeat else None
                if bounds is not None:
                    start, stop = bounds.start, bounds.end
                    break
            start = start or res.authoredOn
        self.col.result.medications.append((self.patient_id(res.subject), MedicationInput(
            name=name, start=lenient_date(start), stop=lenient_date(stop))))

    def condition(self, res: Any) -> None:
        verification = _concept_text(res.verificationStatus) or ""
        if verification.lower() in ("entered-in-error", "refuted"):
            return
        name = _concept_text(res.code)
        if name:
            self.col.result.conditions.append((self.patient_id(res.subject), name))


def _unit(q: Any) -> str | None:
    """A Quantity's unit: the UCUM `code` first (machine-readable), then the display `unit`."""
    unit = q.code if q.code and (q.system in (None, UCUM)) else q.unit
    return unit or q.unit


def _is_body_temperature(code: Any) -> bool:
    """A LOINC body-temperature coding (knowledge/temperature.toml): a vital sign, never a count."""
    return any(c.system == LOINC and c.code and body_temperature_code(c.code)
               for c in ((code.coding or []) if code is not None else []))


def _map_concept(code: Any) -> tuple[dict[str, str] | None, str]:
    """LOINC coding first; else a plain analyte name in code.text ("WBC")."""
    codings = (code.coding or []) if code is not None else []
    for coding in codings:
        if coding.system == LOINC and coding.code and loinc_lookup(coding.code):
            return {"code": coding.code}, "LOINC"
    for text in [code.text if code is not None else None, *(c.code for c in codings if c.system != LOINC)]:
        if text:
            try:
                return {"analyte": canonical_analyte(str(text), "code")}, "name"
            except InputError:
                continue
    label = ", ".join(f"{c.code}" for c in codings if c.code) or (code.text if code is not None else "") or "none"
    return None, f"code {label} is not a blood count code leukowatch reads"


def _reference_range(ranges: Any) -> dict[str, Any] | None:
    """The first general range (no appliesTo), else the first; low/high, or its text parsed."""
    if not ranges:
        return None
    rng = next((r for r in ranges if not r.appliesTo), ranges[0])
    out = {}
    if rng.low is not None and rng.low.value is not None:
        out["low"] = float(rng.low.value)
    if rng.high is not None and rng.high.value is not None:
        out["high"] = float(rng.high.value)
    if not out and rng.text:
        return parse_range(str(rng.text))
    return out or None
