"""The 500s fuzzing found (issue 12 §6), each now a 4xx naming the field, under a real uvicorn:
integers beyond float range or past Python's 4,300-digit limit, 1e306 platelets, lone surrogates,
an object or list where a string is expected, a prefetch Bundle whose entry is not a list; and the
per-message limits (segments, results) that keep one message from stalling the service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import bearer, make_token, serve

from leukowatch.service import Settings, create_app

WBC = '{"analyte":"wbc","value":2,"unit":"10*9/L"}'


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = str(tmp_path_factory.mktemp("fuzz") / "s.duckdb")
    token = make_token(db, "ingest")
    with serve(create_app(Settings(db=db, insecure_dev=True, max_segments=200, max_results=50))) as url:
        yield url, token


ASSESS_CASES = [
    ("int beyond float range", '{"observations":[{"analyte":"wbc","value":' + "9" * 400 + ',"unit":"10*9/L"}]}',
     "observations[0].value"),
    ("int past 4300 digits", '{"observations":[{"analyte":"wbc","value":' + "9" * 4400 + ',"unit":"10*9/L"}]}',
     "observations[0].value"),
    ("1e306 platelets", '{"observations":[' + WBC + ',{"analyte":"platelets","value":1e306,"unit":"10*9/L"}]}',
     "observations[1].value"),
    ("lone surrogate", '{"medications":["\\ud800"],"observations":[' + WBC + ']}', "medications[0]"),
    ("object as profile", '{"profile":{"a":1},"observations":[' + WBC + ']}', "profile"),
    ("list as criteria", '{"criteria":["ctcae-v5"],"observations":[' + WBC + ']}', "criteria"),
    ("huge age", '{"patient":{"age_years":' + "9" * 400 + '},"observations":[' + WBC + ']}', "patient.age_years"),
    ("huge temperature", '{"temperature_c":' + "9" * 5000 + ',"observations":[' + WBC + ']}', "temperature_c"),
]


@pytest.mark.parametrize("name,body,field", ASSESS_CASES, ids=[c[0] for c in ASSESS_CASES])
def test_assess_bad_numbers_and_text_are_4xx_naming_the_field(base: tuple[str, str], name: str, body: str,
                                                              field: str) -> None:
    resp = httpx.post(f"{base[0]}/api/assess", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    assert resp.json()["error"]["field"] == field


def test_ingest_huge_fhir_number_is_4xx_naming_the_field(base: tuple[str, str]) -> None:
    url, token = base
    body = ('{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/f1"},'
            '"code":{"coding":[{"system":"http://loinc.org","code":"6690-2"}]},"effectiveDateTime":"2026-01-01",'
            '"valueQuantity":{"value":' + "9" * 4400 + ',"unit":"10*3/uL"}}')
    resp = httpx.post(f"{url}/api/ingest", content=body, headers={"Content-Type": "application/fhir+json"} | bearer(token))
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "valueQuantity.value"


@pytest.mark.parametrize("entry", [{"x": 1}, "abc", 5])
def test_prefetch_bundle_entry_not_a_list_is_4xx(base: tuple[str, str], entry: object) -> None:
    body = {"hook": "patient-view", "hookInstance": "x", "context": {"patientId": "p"},
            "prefetch": {"patient": {"resourceType": "Patient", "id": "p"},
                         "cbc": {"resourceType": "Bundle", "entry": entry}}}
    resp = httpx.post(f"{base[0]}/cds-services/leukowatch-patient-view", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "prefetch.cbc.entry"


def _hl7(n_results: int) -> str:
    segments = ["MSH|^~\\&|LAB|H|LW|H|20260101080000||ORU^R01|L1|P|2.5", "PID|1||lim-1||Doe^J||19800101|F",
                "OBR|1|||57021-8^CBC^LN"]
    segments += [f"OBX|{i}|NM|6690-2^WBC^LN||3.{i % 10}|10*3/uL|||||F|||2026010{1 + i % 8}0800" for i in range(n_results)]
    return "\r".join(segments) + "\r"


def test_per_message_limits_segments_and_results(base: tuple[str, str]) -> None:
    url, token = base
    hl7 = {"Content-Type": "x-application/hl7-v2+er7"} | bearer(token)
    too_many_segments = httpx.post(f"{url}/api/ingest", content=_hl7(300), headers=hl7)
    assert too_many_segments.status_code == 413 and "segments" in too_many_segments.json()["error"]["problem"]
    too_many_results = httpx.post(f"{url}/api/ingest", content=_hl7(80), headers=hl7)
    assert too_many_results.status_code == 413 and "results" in too_many_results.json()["error"]["problem"]
    assert httpx.post(f"{url}/api/assess", content=_hl7(300), headers=hl7).status_code == 413
    assert httpx.post(f"{url}/api/ingest", content=_hl7(5), headers=hl7).status_code == 200


def test_a_large_message_does_not_stall_other_requests(tmp_path) -> None:
    """A ~1 MB message is parsed in a worker thread: /api/knowledge answers meanwhile."""
    db = str(tmp_path / "s.duckdb")
    token = make_token(db, "ingest")
    big = _hl7(9000)
    assert len(big) > 500_000
    settings = Settings(db=db, max_body_bytes=2_000_000, max_segments=20_000, max_results=20_000)
    with serve(create_app(settings)) as url:
        done: dict[str, float] = {}

        def send() -> None:
            httpx.post(f"{url}/api/ingest", content=big, timeout=120,
                       headers={"Content-Type": "x-application/hl7-v2+er7"} | bearer(token))
            done["big"] = time.monotonic()

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.2)
        quick = []
        while "big" not in done and len(quick) < 20:
            start = time.monotonic()
            assert httpx.get(f"{url}/api/knowledge", timeout=30).status_code == 200
            quick.append(time.monotonic() - start)
        sender.join()
    assert quick, "the large message finished before any other request was sent"
    assert max(quick) < 2.0, quick

