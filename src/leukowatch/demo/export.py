"""Write a generated population: Parquet in the tabular mapping, OMOP CDM tables, FHIR R4 Bundles
and HL7 v2 ORU^R01 messages for a subset, the truth and a manifest.

Tables are built column-wise with pyarrow (strings as dictionary columns from the integer codes),
so writing costs about as much as generating. FHIR and HL7 are written for a subset of persons
only (one file per person): they exist to exercise the readers, not to carry the population.
Dirty rows go to the tabular and OMOP files only; FHIR and HL7 carry the clean results.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import scenarios as S
from .generate import Population
from .labs import CBC, DIRTY_KINDS, STYLES, UNITS, Rows, add_dirty, lab_rows

#: OMOP concept ids from docs/clinical-reference.md §10 (measurement: WBC 6690-2, ANC 751-8; units). Other
#: analytes carry concept 0 (unmapped) with the LOINC code in measurement_source_value, which is
#: OMOP's convention for a source code without a standard mapping in hand.
OMOP_MEASUREMENT_CONCEPT = {"6690-2": 3000905, "751-8": 3013650, "26499-4": 3017732}
#: Unit concepts: §10 for counts; % (8554), g/dL (8713), g/L (8636), mmol/L (8753) are the OMOP
#: UCUM standard concepts. unit_source_value always keeps the lab's spelling.
OMOP_UNIT_CONCEPT = {"10*9/L": 9444, "10*3/uL": 8848, "K/uL": 8848, "/uL": 8647, "%": 8554, "g/dL": 8713,
                     "g/L": 8636, "mmol/L": 8753}
OMOP_GENDER = {"male": 8507, "female": 8532}
OMOP_LAB_TYPE = 32856  # Type Concept "Lab"
OMOP_EHR_TYPE = 32817  # Type Concept "EHR"
#: Units that are valid UCUM codes (FHIR valueQuantity.system/code); K/uL is a lab spelling only.
UCUM = {"10*9/L", "10*3/uL", "/uL", "%", "g/dL", "g/L", "mmol/L"}
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
DISPLAY = {
    "wbc": "Leukocytes [#/volume] in Blood", "neutrophils": "Neutrophils", "lymphocytes": "Lymphocytes",
    "monocytes": "Monocytes", "eosinophils": "Eosinophils", "basophils": "Basophils",
    "hemoglobin": "Hemoglobin [Mass/volume] in Blood", "platelets": "Platelets [#/volume] in Blood",
}
TEMPERATURE_LOINC = "8310-5"
_NS = uuid.UUID("6f0c7a52-4b7e-4d0b-9a57-6c65756b6f77")


def _dict_col(codes: np.ndarray, names: list[str] | tuple[str, ...], null: np.ndarray | None = None) -> pa.Array:
    """A string column from integer codes (negative or `null` -> null), via a dictionary array."""
    codes = np.asarray(codes)
    mask = codes < 0 if null is None else (null | (codes < 0))
    # Parquet stores it as a dictionary-encoded string column; files are written without the Arrow
    # schema, so every reader sees plain strings.
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=mask),
                                          pa.array(list(names), pa.string()))


def _ids(pop: Population, pid: np.ndarray) -> pa.Array:
    return _dict_col(pid, list(pop.persons.patient_id))


def _ts(t: np.ndarray) -> pa.Array:
    return pa.array(t.astype("datetime64[s]"), pa.timestamp("s", tz="UTC"))


def _date(d: np.ndarray) -> pa.Array:
    return pa.array(d.astype("datetime64[D]"), pa.date32())


def _floats(x: np.ndarray) -> pa.Array:
    return pa.array(x, pa.float64(), from_pandas=True)  # NaN -> null


def observations_table(pop: Population, rows: Rows) -> pa.Table:
    """The tabular mapping of issue 3: patient_id, time, analyte or loinc, value, unit, low, high,
    sex, birth_date, plus the optional duffy_null the population engine reads (Duffy status is a
    person's property; without it a Duffy-null person's ANC of 1.3 would be judged by the standard
    range). A row names its analyte, its LOINC code, or both (per the lab's habit)."""
    loinc_idx, loinc_codes = rows.loinc_codes()
    style = np.asarray(STYLES)[rows.style]
    P = pop.persons
    return pa.table({
        "patient_id": _ids(pop, rows.pid),
        "time": _ts(rows.time),
        "analyte": _dict_col(rows.analyte, CBC, null=style == "loinc"),
        "loinc": _dict_col(loinc_idx, loinc_codes, null=style == "analyte"),
        "value": pa.array(rows.value, pa.float64()),
        "unit": _dict_col(rows.unit, UNITS),
        "low": _floats(rows.low),
        "high": _floats(rows.high),
        "sex": _dict_col((P.sex == "male").astype(np.int32)[rows.pid], ["female", "male"]),
        "birth_date": _date(P.birth_date[rows.pid]),
        "duffy_null": pa.array(P.duffy_null[rows.pid]),
    })


def persons_table(pop: Population) -> pa.Table:
    P = pop.persons
    return pa.table({"patient_id": pa.array(list(P.patient_id)), "sex": pa.array(P.sex.astype(str)),
                     "birth_date": _date(P.birth_date), "duffy_null": pa.array(P.duffy_null)})


def _side(pop: Population, table: dict[str, np.ndarray], columns: dict[str, str]) -> pa.Table:
    out: dict[str, pa.Array] = {"patient_id": _ids(pop, table["pid"])}
    for name, kind in columns.items():
        col = table[name]
        if kind == "date":
            out[name] = _date(col)
        elif kind == "ts":
            out[name] = _ts(col)
        elif kind == "float":
            out[name] = pa.array(col, pa.float64())
        else:
            out[name] = pa.array(col.astype(str).tolist(), pa.string())
    return pa.table(out)


def truth_table(pop: Population) -> pa.Table:
    t, P = pop.truth, pop.persons
    desc = {s.name: s.description for s in S.SCENARIOS}
    cols: dict[str, Any] = {
        "patient_id": pa.array(list(P.patient_id)), "scenario": pa.array(t["scenario"].astype(str)),
        "description": pa.array([desc[s] for s in t["scenario"]]),
        "sex": pa.array(P.sex.astype(str)), "birth_date": _date(P.birth_date), "duffy_null": pa.array(P.duffy_null),
    }
    for finding in S.FINDINGS:
        cols[finding] = pa.array(t[finding].astype(bool))
    cols["neutropenia_episodes"] = pa.array(t["neutropenia_episodes"].astype(np.int32))
    cols["drug"] = pa.array(list(t["drug"]), pa.string())
    cols["cyclic_period_days"] = pa.array(t["cyclic_period_days"].astype(np.int32))
    return pa.table(cols)


# ------------------------------------------------------------------------------------------ OMOP

def omop_tables(pop: Population, rows: Rows, obs: pa.Table) -> dict[str, pa.Table]:
    """MEASUREMENT, PERSON and DRUG_EXPOSURE (CDM v5.4 column names), person_id = index + 1."""
    P = pop.persons
    loinc_idx, loinc_codes = rows.loinc_codes()
    concept = np.array([OMOP_MEASUREMENT_CONCEPT.get(c, 0) for c in loinc_codes])[loinc_idx]
    unit_concept = np.array([OMOP_UNIT_CONCEPT[u] for u in UNITS] + [0])[rows.unit]  # -1 -> 0
    n = len(rows)
    measurement = pa.table({
        "measurement_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "person_id": pa.array(rows.pid.astype(np.int64) + 1),
        "measurement_concept_id": pa.array(concept.astype(np.int64)),
        "measurement_date": _date(rows.time),
        "measurement_datetime": obs["time"],
        "measurement_type_concept_id": pa.array(np.full(n, OMOP_LAB_TYPE, np.int64)),
        "value_as_number": obs["value"],
        "unit_concept_id": pa.array(unit_concept.astype(np.int64)),
        "range_low": obs["low"],
        "range_high": obs["high"],
        "measurement_source_value": _dict_col(loinc_idx, loinc_codes),
        "unit_source_value": obs["unit"],
    })
    birth = P.birth_date.astype("datetime64[D]")
    year = birth.astype("datetime64[Y]").astype(int) + 1970
    month = birth.astype("datetime64[M]").astype(int) % 12 + 1
    day = (birth - birth.astype("datetime64[M]")).astype(int) + 1
    person = pa.table({
        "person_id": pa.array(np.arange(1, len(P) + 1, dtype=np.int64)),
        "gender_concept_id": pa.array(np.where(P.sex == "male", OMOP_GENDER["male"], OMOP_GENDER["female"])),
        "year_of_birth": pa.array(year.astype(np.int32)), "month_of_birth": pa.array(month.astype(np.int32)),
        "day_of_birth": pa.array(day.astype(np.int32)), "birth_datetime": _ts(birth),
        "race_concept_id": pa.array(np.zeros(len(P), np.int64)),
        "ethnicity_concept_id": pa.array(np.zeros(len(P), np.int64)),
        "person_source_value": pa.array(list(P.patient_id)), "gender_source_value": pa.array(P.sex.astype(str)),
    })
    m = pop.medications
    # CDM requires an end date: an ongoing medicine ends on the extraction date (last data date).
    extraction = pop.draws["time"].max().astype("datetime64[D]")
    end = np.where(np.isnat(m["stop"]), extraction, m["stop"])
    drug_exposure = pa.table({
        "drug_exposure_id": pa.array(np.arange(1, len(m["pid"]) + 1, dtype=np.int64)),
        "person_id": pa.array(m["pid"].astype(np.int64) + 1),
        "drug_concept_id": pa.array(np.zeros(len(m["pid"]), np.int64)),
        "drug_exposure_start_date": _date(m["start"]),
        "drug_exposure_end_date": _date(end),
        "drug_type_concept_id": pa.array(np.full(len(m["pid"]), OMOP_EHR_TYPE, np.int64)),
        "drug_source_value": pa.array(m["name"].astype(str).tolist(), pa.string()),
    })
    return {"measurement": measurement, "person": person, "drug_exposure": drug_exposure}


# ------------------------------------------------------------------------------------------ FHIR / HL7

def _iso(t: np.datetime64) -> str:
    return str(t.astype("datetime64[s]")) + "Z"


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def _quantity(value: float, unit: str) -> dict[str, Any]:
    q: dict[str, Any] = {"value": _num(value), "unit": unit}
    if unit in UCUM:
        q.update(system=UCUM_SYSTEM, code=unit)
    return q


def _person_slices(pid: np.ndarray, people: np.ndarray) -> dict[int, slice]:
    lo = np.searchsorted(pid, people, "left")
    hi = np.searchsorted(pid, people, "right")
    return {int(p): slice(int(a), int(b)) for p, a, b in zip(people, lo, hi, strict=True)}


def fhir_bundle(pop: Population, rows: Rows, p: int, sl: slice) -> dict[str, Any]:
    """One person's collection Bundle: Patient, Observations (labs and temperatures),
    MedicationStatements and Conditions. Valid FHIR R4 (tests validate with fhir.resources)."""
    P = pop.persons
    pid = str(P.patient_id[p])

    def full(kind: str, key: str) -> tuple[str, str]:
        rid = str(uuid.uuid5(_NS, f"{pop.seed}/{pid}/{kind}/{key}"))
        return rid, f"urn:uuid:{rid}"

    pat_id, pat_url = full("Patient", "")
    subject = {"reference": pat_url}
    entries: list[dict[str, Any]] = [{"fullUrl": pat_url, "resource": {
        "resourceType": "Patient", "id": pat_id,
        "identifier": [{"system": "urn:leukowatch:demo", "value": pid}],
        "gender": str(P.sex[p]), "birthDate": str(P.birth_date[p])}}]
    loinc_idx, loinc_codes = rows.loinc_codes()
    for i in range(sl.start, sl.stop):
        analyte, unit = CBC[rows.analyte[i]], UNITS[rows.unit[i]]
        rid, url = full("Observation", str(i))
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": rid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC_SYSTEM, "code": loinc_codes[loinc_idx[i]],
                                 "display": DISPLAY[analyte] + (" (%)" if unit == "%" else "")}],
                     "text": DISPLAY[analyte]},
            "subject": subject, "effectiveDateTime": _iso(rows.time[i]),
            "valueQuantity": _quantity(rows.value[i], unit),
        }
        rr = {side: _quantity(v, unit) for side, v in (("low", rows.low[i]), ("high", rows.high[i])) if v == v}
        if rr:
            obs["referenceRange"] = [rr]
        entries.append({"fullUrl": url, "resource": obs})
    t = pop.temperatures
    for j in np.flatnonzero(t["pid"] == p):
        rid, url = full("Temperature", str(j))
        entries.append({"fullUrl": url, "resource": {
            "resourceType": "Observation", "id": rid, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": LOINC_SYSTEM, "code": TEMPERATURE_LOINC, "display": "Body temperature"}]},
            "subject": subject, "effectiveDateTime": _iso(t["time"][j]),
            "valueQuantity": {"value": float(t["temperature_c"][j]), "unit": "°C", "system": UCUM_SYSTEM,
                              "code": "Cel"}}})
    m = pop.medications
    for j in np.flatnonzero(m["pid"] == p):
        rid, url = full("MedicationStatement", str(j))
        period = {"start": str(m["start"][j])}
        stopped = not np.isnat(m["stop"][j])
        if stopped:
            period["end"] = str(m["stop"][j])
        entries.append({"fullUrl": url, "resource": {
            "resourceType": "MedicationStatement", "id": rid, "status": "completed" if stopped else "active",
            "medicationCodeableConcept": {"text": str(m["name"][j])}, "subject": subject,
            "effectivePeriod": period}})
    c = pop.conditions
    for j in np.flatnonzero(c["pid"] == p):
        rid, url = full("Condition", str(j))
        entries.append({"fullUrl": url, "resource": {
            "resourceType": "Condition", "id": rid,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "code": {"text": str(c["name"][j])}, "subject": subject, "onsetDateTime": str(c["onset"][j])}})
    bundle_id, _ = full("Bundle", "")
    return {"resourceType": "Bundle", "id": bundle_id, "type": "collection", "entry": entries}


def _hl7_escape(text: str) -> str:
    out = text.replace("\\", "\\E\\")
    for ch, esc in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(ch, esc)
    return out


def _hl7_ts(t: np.datetime64) -> str:
    return str(t.astype("datetime64[s]")).replace("-", "").replace("T", "").replace(":", "")


def hl7_message(pop: Population, rows: Rows, p: int, sl: slice) -> str:
    """One ORU^R01 (v2.5.1) per person: one OBR group per draw, one OBX per result."""
    P = pop.persons
    pid = str(P.patient_id[p])
    loinc_idx, loinc_codes = rows.loinc_codes()
    last = rows.time[sl.stop - 1]
    segs = [f"MSH|^~\\&|LEUKOWATCH-DEMO|DEMO-LAB|LEUKOWATCH|DEMO|{_hl7_ts(last)}||ORU^R01^ORU_R01|"
            f"DEMO-{pop.seed}-{pid}|P|2.5.1",
            f"PID|1||{pid}^^^DEMO^MR||Demo^{pid}||{str(P.birth_date[p]).replace('-', '')}|"
            f"{'M' if P.sex[p] == 'male' else 'F'}"]
    draws = rows.draw[sl]
    obr = 0
    for i in range(sl.start, sl.stop):
        if i == sl.start or draws[i - sl.start] != draws[i - sl.start - 1]:
            obr += 1
            segs.append(f"OBR|{obr}||{pid}-{obr}|58410-2^CBC panel - Blood by Automated count^LN|||"
                        f"{_hl7_ts(rows.time[i])}")
            obx = 0
        obx += 1
        analyte, unit = CBC[rows.analyte[i]], UNITS[rows.unit[i]]
        low, high, value = rows.low[i], rows.high[i], rows.value[i]
        rng = f"{_num(low)}-{_num(high)}" if low == low and high == high else (f">{_num(low)}" if low == low else "")
        flag = ""
        if low == low or high == high:
            flag = "L" if value < low else ("H" if value > high else "N")
        segs.append(f"OBX|{obx}|NM|{loinc_codes[loinc_idx[i]]}^{_hl7_escape(DISPLAY[analyte])}^LN||{_num(value)}|"
                    f"{_hl7_escape(unit)}|{rng}|{flag}|||F|||{_hl7_ts(rows.time[i])}")
    return "\r".join(segs) + "\r"


def subset(pop: Population, size: int) -> np.ndarray:
    """Persons written as FHIR and HL7: the first two of every scenario, then others spread evenly
    over the population until `size` (0 writes none)."""
    if size <= 0:
        return np.zeros(0, np.int64)
    sc = pop.persons.scenario
    chosen: list[int] = []
    for s in S.SCENARIOS:
        chosen += np.flatnonzero(sc == s.name)[:2].tolist()
    rest = np.setdiff1d(np.arange(len(sc)), chosen)
    extra = min(max(0, size - len(chosen)), rest.size)
    if extra:
        chosen += rest[np.linspace(0, rest.size - 1, extra).astype(int)].tolist()
    return np.unique(np.array(chosen, dtype=np.int64))


# ------------------------------------------------------------------------------------------ all

def write_demo(pop: Population, outdir: str | Path, subset_size: int = 50,
               timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Write every file of the demo set into `outdir`; returns the manifest (also manifest.json).
    `timings`, when given, receives the seconds spent building the lab rows (`rows`)."""
    out = Path(outdir)
    (out / "omop").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clean = lab_rows(pop)
    rows, dirty = add_dirty(clean, pop.seed)
    if timings is not None:
        timings["rows"] = time.perf_counter() - t0
    obs = observations_table(pop, rows)
    tables: dict[str, pa.Table] = {
        "observations.parquet": obs,
        "persons.parquet": persons_table(pop),
        "medications.parquet": _side(pop, pop.medications, {"name": "str", "start": "date", "stop": "date"}),
        "chemotherapy.parquet": _side(pop, pop.chemotherapy, {"dose_date": "date", "regimen": "str"}),
        "conditions.parquet": _side(pop, pop.conditions, {"name": "str", "onset": "date"}),
        "temperatures.parquet": _side(pop, pop.temperatures, {"time": "ts", "temperature_c": "float"}),
        "truth.parquet": truth_table(pop),
        "dirty_rows.parquet": pa.table({
            "row": pa.array(np.flatnonzero(rows.dirty).astype(np.int64)),
            "kind": _dict_col(rows.dirty[rows.dirty > 0], DIRTY_KINDS)}),
    }
    for name, table in omop_tables(pop, rows, obs).items():
        tables[f"omop/{name}.parquet"] = table
    for name, table in tables.items():
        pq.write_table(table, out / name, compression="snappy", store_schema=False)

    chosen = subset(pop, subset_size)
    slices = _person_slices(clean.pid, chosen)
    for kind in ("fhir", "hl7"):
        (out / kind).mkdir(exist_ok=True)
        for stale in (out / kind).iterdir():
            stale.unlink()
    written = 0
    for p, sl in slices.items():
        if sl.stop == sl.start:
            continue
        name = str(pop.persons.patient_id[p])
        (out / "fhir" / f"{name}.json").write_text(json.dumps(fhir_bundle(pop, clean, p, sl), ensure_ascii=False),
                                                   encoding="utf-8")
        (out / "hl7" / f"{name}.hl7").write_bytes(hl7_message(pop, clean, p, sl).encode("utf-8"))
        written += 1

    truth = pop.truth
    manifest = {
        "generator": "leukowatch demo generate",
        "seed": pop.seed,
        "persons": len(pop.persons),
        "children": int(pop.persons.child.sum()),
        "duffy_null": int(pop.persons.duffy_null.sum()),
        "scenarios": {s.name: int((truth["scenario"] == s.name).sum()) for s in S.SCENARIOS},
        "truth": {f: int(truth[f].sum()) for f in S.FINDINGS}
                 | {"neutropenia_episodes": int(truth["neutropenia_episodes"].sum())},
        "files": {name: t.num_rows for name, t in tables.items()} | {"fhir/*.json": written, "hl7/*.hl7": written},
        "observations": {"rows": len(rows), "clean": len(clean), "dirty": int(sum(dirty.values())),
                         "draws": int(pop.draws["pid"].size)},
        "dirty_rows": dirty | {"total": int(sum(dirty.values()))},
        "notes": [
            "dirty rows are added copies (missing unit, negative value, WBC 5000 x10^9/L, exact duplicate): "
            "each must end in a reader's rejects; dirty_rows.parquet lists their row numbers",
            "FHIR and HL7 files hold clean results of a subset of persons",
            "chemotherapy doses are only in chemotherapy.parquet; medications.parquet and "
            "omop/drug_exposure.parquet hold the other medicines (incl. G-CSF)",
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
