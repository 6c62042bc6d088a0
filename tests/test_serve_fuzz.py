"""Property-based fuzz of the server's own OpenAPI schema (issue 18.2): schemathesis generates
requests for every operation from its request schema (with `model` set to the served name, so
the bodies reach the engine); none may be answered with a 5xx. Bounded: a fixed number of examples per operation,
no example database, a tiny random model with a short context."""

from collections import Counter

import hypothesis  # noqa: E402
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from serve_helpers import MODEL, start  # noqa: E402

EXAMPLES_PER_OPERATION = 30


def test_openapi_fuzz_finds_no_server_errors():
    async_engine, server, *_ = start(context=128)
    with server as url:
        import httpx

        spec = httpx.get(f"{url}/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        # /v1/rag/search builds the notes index (MiniLM embeddings) on first use, a minute of
        # the budget on its own; tests/test_serve_rag.py covers its errors.
        operations = [
            op
            for op in (result.ok() for result in schema.get_all_operations())
            if op.path != "/v1/rag/search"
        ]
        assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions"}
        failures, calls = [], []

        def fuzz(operation):
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,  # the same examples every run: CI is repeatable
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy())
            def no_5xx(case):
                if isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = MODEL  # past the 404 for an unknown model, into the engine
                response = case.call(base_url=url, timeout=60)
                calls.append((operation.label, response.status_code))
                if response.status_code >= 500:
                    failures.append((operation.label, case.body, response.text[:300]))

            no_5xx()

        for operation in operations:
            fuzz(operation)
        statuses = Counter(status for _, status in calls)
        print(f"{len(calls)} requests, statuses {dict(statuses)}")
        assert statuses[200] > 0 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 0
        assert failures == [], failures[:5]
