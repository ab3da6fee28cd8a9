"""Property-based fuzzing of the OpenAPI document against a live server (schemathesis): every
operation, with generated parameters and bodies, answers no 500 (no crash, whatever the input)
and no status the document does not list. 503 and 504 are designed answers (overload, a deadline
the client set too short) and are allowed where documented. Bounded: a fixed number of examples
per operation, loopback only."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance
from service_helpers import LIMITS, LiveServer, make_settings

from easerve.service.app import create_app

EXAMPLES_PER_OPERATION = 25


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_server_errors_and_no_undocumented_statuses(weights_dir, mode):
    with LiveServer(create_app(make_settings(weights_dir, **LIMITS))) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        exercised = 0
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def operation_holds(case) -> None:
                response = case.call(base_url=live.url, timeout=30)
                assert response.status_code != 500, f"{case.method} {case.formatted_path}: {response.text}"
                case.validate_response(response, checks=[status_code_conformance])

            try:
                operation_holds()
                exercised += 1
            except Unsatisfiable:
                # No invalid input exists where every parameter is a free string, or there is none.
                assert mode == GenerationMode.NEGATIVE, operation.label
        # Invalid data exists for every inference route (6 under /v1, the v2 infer).
        assert exercised >= (len(operations) if mode == GenerationMode.POSITIVE else 7)
