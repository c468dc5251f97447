"""schemathesis over the service's OpenAPI schema against a real uvicorn: whatever it sends, no 5xx.

Bounded (a few examples per operation) so it stays inside the suite's time budget; the CDS routes run
with --insecure-dev so generated hook bodies reach the parsing code instead of stopping at 401."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from service_helpers import serve

from leukowatch.service import Settings, create_app

schema = schemathesis.openapi.from_dict(create_app(Settings(insecure_dev=True)).openapi())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = tmp_path_factory.mktemp("schema") / "store.duckdb"
    with serve(create_app(Settings(insecure_dev=True, db=str(db)))) as url:
        yield url


@schema.parametrize()
@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_server_errors(case: schemathesis.Case, base: str) -> None:
    response = case.call(base_url=base, timeout=20)
    case.validate_response(response, checks=(not_a_server_error,))
