"""Schema-driven fuzzing of the HTTP API (schemathesis, from the OpenAPI schema at
/api/schema) against a real stack: every operation, with generated bodies, parameters and
path ids, as a member with a valid token. Zero server errors: each answer is a success or a
documented error code in the envelope. Bounded in examples per operation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.conftest import PASSWORD

DOCUMENTED = {"invalid", "unauthenticated", "forbidden", "not_found", "busy", "conflict", "too_large", "queue_full"}
DOCUMENTED |= {"rate_limited", "unavailable"}


@pytest.fixture(scope="module")
def fuzz_stack(stack_factory):
    # Login throttling off: generated logins fail by the hundred, and the failures of an
    # address are shared through the database with every stack of the test run.
    return stack_factory({"LOGIN_THROTTLING": "false"})


@pytest.fixture(scope="module")
def token(fuzz_stack, create_user) -> str:
    username = create_user("schema")
    answer = httpx.post(f"{fuzz_stack.base_url}/api/auth/token", json={"username": username, "password": PASSWORD})
    return str(answer.json()["token"])


@pytest.mark.timeout(900)
def test_no_request_gets_a_server_error(fuzz_stack, token):
    # Driven by hand rather than through schemathesis' pytest plugin, which reads a private
    # attribute pytest 9 no longer has. Revoking the token would leave the rest of the run
    # unauthenticated (revocation has its own tests in tests/unit/test_security_http.py).
    schema = schemathesis.openapi.from_url(f"{fuzz_stack.base_url}/api/schema").exclude(path="/api/auth/token/revoke")
    headers = {"Authorization": f"Token {token}"}
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 15  # every operation of the schema is usable

    for operation in operations:

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def answers_without_a_server_error(case: Any) -> None:
            response = case.call(base_url=fuzz_stack.base_url, headers=headers, timeout=30)
            where = (case.method, case.formatted_path, response.text[:300])
            assert response.status_code < 500, where
            if response.status_code >= 400:
                assert response.json()["error"]["code"] in DOCUMENTED, where

        answers_without_a_server_error()
