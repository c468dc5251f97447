"""Open a screen's inputs on an engine: tabular files, OMOP CDM tables, or the leukowatch store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir

from ..io.omop import omop_maps
from ..knowledge import load_table
from ..model import InputError
from .engines import Engine
from .inline import inline_table
from .inputs import Sources, _pick, classify_inputs, parse_date_col, parse_time, standardise

_MED_SCHEMA = {"patient_id": "string", "name": "string", "start": "date", "stop": "date"}


def _read_any(engine: Engine, path: Path, workdir: Path, table: str | None = None) -> ir.Table:
    if table is not None:
        return engine.read_duckdb_table(path, table, workdir)
    if path.suffix.lower() == ".csv":
        return engine.read_csv(path)
    return engine.read_parquet([path], row_number=True)


def _medications(t: ir.Table) -> ir.Table:
    pid = _pick(t, ("patient_id", "person_id"))
    name = _pick(t, ("name", "medication", "drug", "drug_source_value"))
    start = _pick(t, ("start", "start_date", "drug_exposure_start_date"))
    stop = _pick(t, ("stop", "end", "stop_date", "drug_exposure_end_date"))
    if pid is None or name is None:
        raise InputError("medications", "needs patient_id and name columns")
    return t.select(patient_id=t[pid].cast("string"), name=t[name].cast("string"),
                    start=parse_date_col(t[start]) if start else ibis.null("date"),
                    stop=parse_date_col(t[stop]) if stop else ibis.null("date"))


def _temperatures(t: ir.Table) -> ir.Table:
    pid = _pick(t, ("patient_id", "person_id"))
    when = _pick(t, ("time", "datetime"))
    temp = _pick(t, ("temperature_c", "temperature"))
    if pid is None or when is None or temp is None:
        raise InputError("temperatures", "needs patient_id, time and temperature_c columns")
    return t.select(patient_id=t[pid].cast("string"), time=parse_time(t[when]),
                    temperature_c=t[temp].try_cast("float64") if t[temp].type().is_string()
                    else t[temp].cast("float64"))


def _union(tables: list[ir.Table]) -> ir.Table | None:
    """One relation of several inputs; a column typed differently by two of them (a CSV's text `value`
    beside a Parquet file's numbers) is read as text in all, which `with_numbers` parses."""
    if len(tables) <= 1:
        return tables[0] if tables else None
    mixed = {c for c in tables[0].columns if len({str(t.schema()[c]) for t in tables}) > 1}
    if mixed:
        tables = [t.mutate(**{c: t[c].cast("string") for c in mixed}) for t in tables]
    return ibis.union(*tables)


def _concept_map(mapping: Any, concept: str, text: str) -> ir.Table:
    """knowledge/omop.toml's concept id -> text map as a relation (columns `concept`, `text`)."""
    return inline_table([{concept: int(k), text: v} for k, v in mapping.items()], {concept: "int64", text: "string"})


def _omop(engine: Engine, tables: dict[str, tuple[Path, str | None]], workdir: Path) -> Sources:
    """MEASUREMENT (+ PERSON, DRUG_EXPOSURE, CONCEPT) through knowledge/omop.toml, as io/omop.py reads it."""
    maps = omop_maps()
    m = _read_any(engine, tables["measurement"][0], workdir, tables["measurement"][1])
    concept_map = _concept_map({k: v["loinc"] for k, v in maps["measurement"].items()}, "mc", "m_loinc")
    unit_map = _concept_map(maps["unit"], "uc", "m_unit")
    op_map = _concept_map(maps["operator"], "oc", "m_op")
    m = m.mutate(_mc=m.measurement_concept_id.cast("string").try_cast("int64"))
    m = m.left_join(concept_map, m._mc == concept_map.mc)
    m = m.select(*m.columns)
    uc = m.unit_concept_id.cast("string").try_cast("int64") if "unit_concept_id" in m.columns else ibis.null("int64")
    m = m.mutate(_uc=uc)
    m = m.left_join(unit_map, m._uc == unit_map.uc)
    m = m.select(*m.columns)
    if "operator_concept_id" in m.columns:
        m = m.mutate(_oc=m.operator_concept_id.cast("string").try_cast("int64"))
        m = m.left_join(op_map, m._oc == op_map.oc)
        m = m.select(*m.columns)
        op = m.m_op
    else:
        op = ibis.null("string")
    src_val = m.measurement_source_value.cast("string") if "measurement_source_value" in m.columns else \
        ibis.null("string")
    unit_src = m.unit_source_value.cast("string") if "unit_source_value" in m.columns else ibis.null("string")
    value = m.value_as_number.cast("string")
    when = m.measurement_datetime if "measurement_datetime" in m.columns else m.measurement_date
    if "measurement_date" in m.columns and "measurement_datetime" in m.columns:
        when = parse_time(m.measurement_datetime).fill_null(parse_time(m.measurement_date))
    raw = m.select(
        _row=m._rn.cast("int64"), _src=ibis.literal(str(tables["measurement"][0])),
        patient_id=m.person_id.cast("string"), time=parse_time(when), analyte=ibis.null("string"),
        loinc=m.m_loinc.fill_null(src_val), value=ibis.cases((op.notnull(), op + value), else_=value),
        unit=m.m_unit.fill_null(unit_src),
        low=m.range_low.cast("string").try_cast("float64") if "range_low" in m.columns else ibis.null("float64"),
        high=m.range_high.cast("string").try_cast("float64") if "range_high" in m.columns else ibis.null("float64"),
        sex=ibis.null("string"), birth_date=ibis.null("date"), age_years=ibis.null("float64"),
        duffy_null=ibis.null("boolean"))
    patients = None
    if "person" in tables:
        p = _read_any(engine, tables["person"][0], workdir, tables["person"][1])
        rule = load_table("omop")["person"]
        genders = _concept_map(maps["gender"], "gc", "g_sex")
        p = p.mutate(_gc=p.gender_concept_id.cast("string").try_cast("int64"))
        p = p.left_join(genders, p._gc == genders.gc)
        p = p.select(*p.columns)
        year = p.year_of_birth.cast("string").try_cast("int64")
        month = (p.month_of_birth.cast("string").try_cast("int64") if "month_of_birth" in p.columns
                 else ibis.null("int64")).fill_null(int(rule["missing_month"]))
        day = (p.day_of_birth.cast("string").try_cast("int64") if "day_of_birth" in p.columns
               else ibis.null("int64")).fill_null(int(rule["missing_day"]))
        birth = ibis.date(year, month, day)
        if "birth_datetime" in p.columns:
            birth = parse_date_col(p.birth_datetime.cast("string")).fill_null(birth)
        patients = p.select(patient_id=p.person_id.cast("string"), sex=p.g_sex.fill_null("unknown"),
                            birth_date=birth, age_years=ibis.null("float64"), duffy_null=ibis.literal(False))
    meds = None
    if "drug_exposure" in tables:
        d = _read_any(engine, tables["drug_exposure"][0], workdir, tables["drug_exposure"][1])
        name = d.drug_source_value.cast("string")
        if "concept" in tables:
            c = _read_any(engine, tables["concept"][0], workdir, tables["concept"][1])
            c = c.select(cid=c.concept_id.cast("string").try_cast("int64"), cname=c.concept_name.cast("string"))
            d = d.mutate(_dc=d.drug_concept_id.cast("string").try_cast("int64"))
            d = d.left_join(c, d._dc == c.cid)
            d = d.select(*d.columns)
            name = d.cname.fill_null(d.drug_source_value.cast("string"))
        meds = d.select(patient_id=d.person_id.cast("string"), name=name,
                        start=parse_date_col(d.drug_exposure_start_date),
                        stop=parse_date_col(d.drug_exposure_end_date)
                        if "drug_exposure_end_date" in d.columns else ibis.null("date"))
        meds = meds.filter(meds.name.notnull())
    return Sources(raw, meds, None, "omop", patients)


def _store(engine: Engine, path: Path, workdir: Path) -> Sources:
    """The leukowatch store: observations are already canonical, so their unit re-validates as itself."""
    o = engine.read_duckdb_table(path, "observations", workdir)
    value = ibis.cases((o.comparator.notnull(), o.comparator + o.value.cast("string")), else_=o.value.cast("string"))
    raw = o.select(_row=o._rn.cast("int64"), _src=ibis.literal(str(path)), patient_id=o.patient_id.cast("string"),
                   time=parse_time(o.time), analyte=o.analyte, loinc=ibis.null("string"), value=value,
                   unit=o.unit, low=o.ref_low, high=o.ref_high, sex=ibis.null("string"),
                   birth_date=ibis.null("date"), age_years=ibis.null("float64"), duffy_null=ibis.null("boolean"))
    p = engine.read_duckdb_table(path, "patients", workdir)
    patients = p.select(patient_id=p.patient_id.cast("string"), sex=p.sex.fill_null("unknown"),
                        birth_date=parse_date_col(p.birth_date), age_years=p.age_years.cast("float64"),
                        duffy_null=p.duffy_null.fill_null(False))
    m = engine.read_duckdb_table(path, "medications", workdir)
    temps = None
    if "temperatures" in engine.duckdb_tables(path):  # a store older than migration 4 has none
        temps = _temperatures(engine.read_duckdb_table(path, "temperatures", workdir))
    return Sources(raw, _medications(m), temps, "store", patients)


def open_sources(engine: Engine, inputs: list[str], workdir: Path) -> Sources:
    """Every INPUT as one raw relation (+ medications, temperatures, persons) on `engine`."""
    groups = classify_inputs(inputs)
    parts: list[Sources] = []
    for db in groups["store"]:
        tables = engine.duckdb_tables(db)
        if "observations" in tables:
            parts.append(_store(engine, db, workdir))
        elif "measurement" in tables:
            parts.append(_omop(engine, {t: (db, t) for t in tables if t in ("measurement", "person",
                                                                           "drug_exposure", "concept")}, workdir))
        else:
            raise InputError(str(db), "a DuckDB file with neither an observations (leukowatch store) nor a "
                                      "measurement (OMOP CDM) table")
    if groups["omop"]:
        found = {p.stem.lower(): (p, None) for p in groups["omop"]}
        if "measurement" not in found:
            raise InputError(str(groups["omop"][0]), "OMOP tables without a MEASUREMENT table")
        parts.append(_omop(engine, found, workdir))  # type: ignore[arg-type]
    tabular: list[ir.Table] = []
    for f in groups["observations"]:
        t = _read_any(engine, f, workdir)
        tabular.append(standardise(t, str(f), t._rn))
    meds = [_medications(_read_any(engine, f, workdir)) for f in groups["medications"]]
    temps = [_temperatures(_read_any(engine, f, workdir)) for f in groups["temperatures"]]
    if tabular:
        parts.append(Sources(_union(tabular), _union(meds), _union(temps), "tabular"))  # type: ignore[arg-type]
    elif meds or temps:
        if not parts:
            raise InputError(inputs[0], "no observations among the inputs")
        parts[0].medications = _union([x for x in [parts[0].medications, *meds] if x is not None])
        parts[0].temperatures = _union(temps)
    if not parts:
        raise InputError(inputs[0] if inputs else "INPUT", "no observations file among the inputs")
    raw = _union([p.raw for p in parts])
    med_list = [p.medications for p in parts if p.medications is not None]
    temp_list = [p.temperatures for p in parts if p.temperatures is not None]
    pat_list = [p.patients for p in parts if p.patients is not None]
    return Sources(raw, _union(med_list), _union(temp_list), "+".join(p.kind for p in parts), _union(pat_list))


def empty_medications() -> ir.Table:
    return inline_table([], _MED_SCHEMA)
