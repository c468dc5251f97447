"""The web page: a CBC form, the result page, stored patients and the population, server-rendered.

No JavaScript is needed (static/app.js adds the live ANC, unit labels and the Print and Copy
buttons; no inline script, for the Content-Security-Policy) and nothing loads from a CDN, so the
pages work on a ward PC without internet. Text shown to people goes through render/display.py (one
unit notation, sources as links); a stored patient's page leads with render/summary.py's headline of
the whole history; the patient list is service/patient_list.py. The form builds the same JSON request the REST API takes;
each bad field is validated by the project's own parser and its message is shown next to that
field (`aria-describedby`), so a screen reader reads it with the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from .. import vocabulary
from ..assess import assess
from ..model import Assessment, InputError
from ..render.display import patient_units, readable_units, source_html
from ..request import parse_observation, parse_patient
from .auth import stored_page_guard
from .cds_cards import indicator

#: Pages under /patients and /population need a signed-in browser (role read) and are audited.
router = APIRouter(include_in_schema=False, dependencies=[Depends(stored_page_guard)])
templates = Jinja2Templates(directory=str(resources.files("leukowatch.service") / "templates"))
# One unit notation on every page (×10⁹/L, /µL; cells per microlitre for patients); sources as links.
templates.env.filters["units"] = readable_units
templates.env.filters["patient_units"] = patient_units
templates.env.filters["source"] = lambda text: Markup(source_html(text))
templates.env.filters["analyte_label"] = lambda name: vocabulary.analyte(name).label  # knowledge/vocabulary.toml

#: Form count fields in display order: (form name, analyte, label, takes a % in differential mode).
COUNT_FIELDS: tuple[tuple[str, str, str, bool], ...] = (
    ("wbc", "wbc", "White blood cells (WBC)", False),
    ("neutrophils", "neutrophils", "Neutrophils (ANC; in % mode segmented)", True),
    ("bands", "bands", "Bands", True),
    ("lymphocytes", "lymphocytes", "Lymphocytes", True),
    ("monocytes", "monocytes", "Monocytes", True),
    ("eosinophils", "eosinophils", "Eosinophils", True),
    ("basophils", "basophils", "Basophils", True),
    ("platelets", "platelets", "Platelets", False),
)
COUNT_UNITS: tuple[tuple[str, str], ...] = (
    ("10*9/L", "×10⁹/L (= ×10³/µL, K/µL)"), ("cells/uL", "cells/µL (= /mm³)"), ("G/L", "G/L"),
)
HB_UNITS: tuple[str, ...] = ("g/dL", "g/L", "mmol/L")
PROFILES: tuple[tuple[str, str], ...] = (
    ("", "automatic (standard; Duffy-null if ticked)"), ("standard", "standard"), ("article", "article"),
    ("duffy_null", "Duffy-null"),
)
#: Risk-score items the form asks for (collapsed), per score: (form name, request key, label, choices).
#: Choices are (value sent, label); "" means not answered, and unanswered items are never assumed.
#: A `score_` field is asked once and counts for every score (COPD is an item of both).
_YES_NO = (("", "not known"), ("yes", "yes"), ("no", "no"))
SCORE_FIELDS: tuple[tuple[str, tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]], ...] = (
    ("mascc", (
        ("mascc_burden", "burden_of_illness", "Burden of illness",
         (("", "not known"), ("none", "none"), ("mild", "mild"), ("moderate", "moderate"), ("severe", "severe"))),
        ("mascc_hypotension", "hypotension", "Hypotension (systolic BP ≤ 90 mmHg)", _YES_NO),
        ("score_copd", "copd", "Chronic obstructive pulmonary disease", _YES_NO),
        ("mascc_tumour", "tumour", "Tumour", (("", "not known"), ("solid", "solid"),
                                              ("hematologic", "haematological"))),
        ("mascc_fungal", "prior_fungal_infection", "Previous fungal infection", _YES_NO),
        ("mascc_dehydration", "dehydration", "Dehydration needing IV fluids", _YES_NO),
        ("mascc_outpatient", "outpatient", "Outpatient when the fever began", _YES_NO),
    )),
    ("cisne", (
        ("cisne_ecog", "ecog", "ECOG performance status", (("", "not known"),) + tuple((str(i), str(i)) for i in range(5))),
        ("cisne_hyperglycemia", "stress_hyperglycemia", "Stress-induced hyperglycaemia", _YES_NO),
        ("cisne_cardiovascular", "chronic_cardiovascular_disease", "Chronic cardiovascular disease", _YES_NO),
        ("cisne_mucositis", "mucositis_grade", "Mucositis (NCI grade)",
         (("", "not known"),) + tuple((str(i), str(i)) for i in range(5))),
    )),
)
_OBS_PATH = re.compile(r"^observations\[(\d+)\]")
_PATH_TO_FORM = {"patient.age_years": "age", "patient.sex": "sex", "patient.duffy_null": "duffy_null",
                 "temperature_c": "temperature_c", "chemotherapy.last_dose": "chemo_last_dose",
                 "chemotherapy": "chemo_last_dose", "medications": "medications", "conditions": "conditions",
                 "symptoms": "symptoms", "profile": "profile", "criteria": "profile"}


def _answer(value: str) -> Any:
    if value in ("yes", "no"):
        return value == "yes"
    return int(value) if value.isdigit() else value


def _score_items(form: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{"mascc": {...}, "cisne": {...}} with only the items the user answered; a score none of whose
    own items were answered is left out (so it is not shown)."""
    answered = {name: (key, _answer(v)) for _, fields in SCORE_FIELDS for name, key, _, _ in fields
                if (v := (form.get(name) or "").strip())}
    shared = {key: value for name, (key, value) in answered.items() if name.startswith("score_")}
    out: dict[str, dict[str, Any]] = {}
    for score, fields in SCORE_FIELDS:
        own = {answered[n][0]: answered[n][1] for n, *_ in fields if n in answered and not n.startswith("score_")}
        if own:
            out[score] = shared | own
    return out


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


@dataclass
class FormResult:
    request: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    #: observation index -> form field, to put a parser message next to the right input.
    obs_fields: list[str] = field(default_factory=list)

    def form_field(self, path: str) -> str:
        m = _OBS_PATH.match(path)
        if m and int(m.group(1)) < len(self.obs_fields):
            return self.obs_fields[int(m.group(1))]
        for prefix, name in _PATH_TO_FORM.items():
            if path.startswith(prefix):
                return name
        return "form"


def request_from_form(form: dict[str, str]) -> FormResult:
    """The project JSON request the form describes, plus per-field errors found by the project parser."""
    percent_mode = form.get("mode") == "percent"
    unit = form.get("unit") or "10*9/L"
    observations: list[dict[str, Any]] = []
    obs_fields: list[str] = []
    for name, analyte, _, differential in COUNT_FIELDS:
        value = (form.get(name) or "").strip()
        if value:
            observations.append({"analyte": analyte, "value": value,
                                 "unit": "%" if percent_mode and differential else unit})
            obs_fields.append(name)
    hb = (form.get("hemoglobin") or "").strip()
    if hb:
        observations.append({"analyte": "hemoglobin", "value": hb, "unit": form.get("hb_unit") or "g/dL"})
        obs_fields.append("hemoglobin")
    patient: dict[str, Any] = {"sex": form.get("sex") or "unknown", "duffy_null": form.get("duffy_null") == "on"}
    if (form.get("age") or "").strip():
        patient["age_years"] = form["age"].strip()
    request: dict[str, Any] = {
        "patient": patient, "observations": observations,
        "medications": _lines(form.get("medications", "")), "conditions": _lines(form.get("conditions", "")),
        "symptoms": _lines(form.get("symptoms", "")),
    }
    if (form.get("temperature_c") or "").strip():
        request["temperature_c"] = form["temperature_c"].strip()
    if form.get("chemo") == "on" or (form.get("chemo_last_dose") or "").strip():
        request["chemotherapy"] = {"active": True, "last_dose": (form.get("chemo_last_dose") or "").strip() or None}
    if form.get("profile"):
        request["profile"] = form["profile"]
    request |= _score_items(form)
    result = FormResult(request, obs_fields=obs_fields)
    if "wbc" not in obs_fields:
        result.errors["wbc"] = "Enter the white-cell count (WBC)" + (
            ": the percentages are of the WBC" if percent_mode else "")
    for i, obs in enumerate(observations):
        try:
            parse_observation(obs, f"observations[{i}]")
        except InputError as exc:
            result.errors.setdefault(obs_fields[i], exc.problem)
    try:
        parse_patient(patient)
    except InputError as exc:
        result.errors.setdefault(result.form_field(exc.field), exc.problem)
    return result


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _form_context(form: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    return {"form": form, "errors": errors, "count_fields": COUNT_FIELDS, "count_units": COUNT_UNITS,
            "hb_units": HB_UNITS, "profiles": PROFILES, "score_fields": SCORE_FIELDS,
            "scores_open": any((form.get(n) or "").strip() for _, fields in SCORE_FIELDS for n, *_ in fields)}


def _result_context(a: Assessment, request: dict[str, Any] | None = None, history: Any = None,
                    who: str = "") -> dict[str, Any]:
    """What the result templates read. A risk score is shown only when some of its items were given:
    a MASCC of "2/26, incomplete" from the age alone tells nobody anything."""
    from ..render.summary import note_text

    given = {k for k in ("mascc", "cisne") if (request or {}).get(k)}
    scores = [s for s in a.scores if s.name.split()[0].lower() in given]
    return {"a": a, "level": indicator(a), "scores": scores, "note": note_text(a, history, who),
            "order": ("wbc", "neutrophils", "bands", "lymphocytes", "monocytes",
                      "eosinophils", "basophils", "hemoglobin", "platelets")}


@router.get("/", response_class=HTMLResponse)
async def form_page(request: Request) -> HTMLResponse:
    return _page(request, "form.html", _form_context({"mode": "absolute", "unit": "10*9/L", "sex": "unknown"}, {}))


@router.post("/", response_class=HTMLResponse)
async def submit(request: Request) -> HTMLResponse:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    parsed, a = assessed_form(form)
    if a is None:
        return _page(request, "form.html", _form_context(form, parsed.errors), status=422)
    return _page(request, "result.html", _result_context(a, parsed.request) | {"form": form})


def assessed_form(form: dict[str, str]) -> tuple[FormResult, Assessment | None]:
    """The form's request and its assessment, or None with every problem put next to its field (the
    result page and its PDF both answer a bad field with the form, never a bare JSON error)."""
    parsed = request_from_form(form)
    if parsed.errors:
        return parsed, None
    try:
        return parsed, assess(parsed.request)
    except InputError as exc:
        parsed.errors[parsed.form_field(exc.field)] = exc.problem
        return parsed, None


@router.get("/knowledge", response_class=HTMLResponse)
async def knowledge_page(request: Request) -> HTMLResponse:
    from .api import knowledge_summary

    return _page(request, "knowledge.html", {"k": knowledge_summary()})


@router.post("/result.pdf")
async def result_pdf(request: Request) -> Response:
    """The one-off result as a PDF (the form's fields posted again), for a browser without JavaScript
    or a printer dialog: the same report a stored patient gets, built from this one blood count."""
    from ..history import build_history
    from ..render.report import render_pdf

    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    parsed, a = assessed_form(form)
    if a is None:
        return _page(request, "form.html", _form_context(form, parsed.errors), status=422)
    pdf = render_pdf(build_history(parsed.request), a)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": 'attachment; filename="leukowatch-result.pdf"'})


def _patient_rows(request: Request) -> tuple[list[Any], float | None]:
    """The stored patients with the population screen's findings, and when that screen ran."""
    from ..io.store import list_patients
    from .patient_list import rows_of
    from .population import person_findings

    found, screened_at = person_findings(request.app.state.store)
    cur = request.app.state.store.cursor()
    try:
        patients = list_patients(cur)
    finally:
        cur.close()
    return rows_of(patients, found), screened_at


@router.get("/patients", response_class=HTMLResponse)
def patients_page(request: Request) -> HTMLResponse:
    from .patient_list import FLAG_LABELS, SORTS, Query, page_of, select

    query = Query.from_params(request.query_params)
    rows, screened_at = _patient_rows(request)
    selected = select(rows, query)
    shown, page, pages = page_of(selected, query.page)
    query.page = page
    as_of = datetime.fromtimestamp(screened_at, UTC).strftime("%Y-%m-%d %H:%M UTC") if screened_at else None
    return _page(request, "patients.html", {"rows": shown, "total": len(rows), "matched": len(selected),
                                            "page": page, "pages": pages, "query": query, "sorts": SORTS,
                                            "flag_labels": FLAG_LABELS, "screened_at": as_of})


@router.get("/patients.csv")
def patients_csv(request: Request) -> Response:
    from .patient_list import Query, csv_text, select

    query = Query.from_params(request.query_params)
    return Response(csv_text(select(_patient_rows(request)[0], query)), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="leukowatch-patients.csv"'})


@router.get("/patients/{patient_id:path}/plot.png")
def patient_plot(request: Request, patient_id: str) -> Response:
    """Before the page's route: a patient id may hold a '/' (an MRN such as 12/3456), so the page
    matches any path, and this one must be tried first."""
    from ..history import build_history
    from ..render.plots import history_png
    from .api import stored_request

    png = history_png(build_history(stored_request(request, patient_id)), dpi=100)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/patients/{patient_id:path}", response_class=HTMLResponse)
def patient_page(request: Request, patient_id: str) -> HTMLResponse:
    from ..history import build_history
    from ..render.summary import headline
    from .api import stored_request

    req = stored_request(request, patient_id)
    a = assess(req)
    history = build_history(req)
    return _page(request, "patient.html", _result_context(a, req, history, f"patient {patient_id}")
                 | {"patient_id": patient_id, "history": history, "headline": headline(history, a)})


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> RedirectResponse:
    return RedirectResponse("/static/favicon.svg", status_code=301)


@router.get("/population", response_class=HTMLResponse)
def population_page(request: Request) -> HTMLResponse:
    from .population import by_finding_and_grade, population_summary

    summary = population_summary(request.app.state.store)
    drug_rows = summary.get("by_drug_class", [])
    peak = max((int(r["episodes"]) for r in drug_rows), default=1) or 1
    return _page(request, "population.html", {
        "s": summary, "findings": by_finding_and_grade(summary),
        "drugs": [r | {"pct": round(100 * int(r["episodes"]) / peak)} for r in drug_rows],
    })
