"""schemathesis + hypothesis over the service's OpenAPI schema against a real uvicorn: whatever it
sends, to every endpoint, no 5xx. Authenticated as admin, so generated bodies reach the stored-data
endpoints' parsing and writing code instead of stopping at 401 (and once without a token, where
every stored-data endpoint must answer 401, never 5xx).

Bounded (a few examples per operation) so it stays inside the suite's time budget; the CDS routes run
with --insecure-dev so generated hook bodies reach the parsing code instead of stopping at 401."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from service_helpers import bearer, make_token, serve

from leukowatch.service import Settings, create_app

schema = schemathesis.openapi.from_dict(create_app(Settings(insecure_dev=True)).openapi())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = str(tmp_path_factory.mktemp("schema") / "store.duckdb")
    admin = make_token(db, "admin", "fuzz-admin")
    with serve(create_app(Settings(insecure_dev=True, db=db))) as url:
        yield url, admin


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_server_errors(case: schemathesis.Case, base: tuple[str, str]) -> None:
    url, admin = base
    response = case.call(base_url=url, headers=bearer(admin), timeout=20)
    case.validate_response(response, checks=(not_a_server_error,))
    stored_data = case.path.startswith(("/api/patients", "/api/ingest", "/api/audit", "/api/tokens"))
    if stored_data and case.method.upper() == case.operation.method.upper():
        anonymous = case.call(base_url=url, timeout=20)
        assert anonymous.status_code == 401, (case.method, case.path, anonymous.status_code)
