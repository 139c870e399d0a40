"""Property-based requests generated from the server's own OpenAPI document: no 5xx, ever.

Bounded: 30 generated requests per operation, against a real server on loopback. Driven
through Hypothesis directly (schemathesis's pytest plugin does not load on this pytest).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.mark.slow
def test_no_server_errors(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    seen: list[tuple[str, int]] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case) -> None:
            response = case.call(base_url=server.url, timeout=30)
            seen.append((case.method, response.status_code))
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                response.text[:300],
            )

        check()
    assert len(seen) >= 2 * len(operations)
    assert any(code == 200 for _, code in seen) and any(400 <= code < 500 for _, code in seen)
