"""Property-based: requests generated from the app's own OpenAPI spec (schemathesis on hypothesis), valid and
invalid ones, with NUL characters and out-of-range numbers allowed, sent with an admin's API key so that teacher
and admin routes are exercised too. Whatever arrives, the answer is never a 5xx other than a documented 503 with
Retry-After, and every error has the one error shape.

Runs after the other cpu-app tests (marker `fuzz`): it creates users, keys, collections and documents at random.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

pytestmark = pytest.mark.fuzz

EXAMPLES_PER_OPERATION = 30
# Only to keep the run bounded in time (the LLM on this CPU makes ~10 tokens/s): generation asked for, or left to
# its default, is capped; values past the limits are left alone (they must be refused, not served). Routes whose
# every answer is a generated text get fewer examples.
GENERATION_CAPS = {"max_tokens": 8, "max_completion_tokens": 8, "n": 2, "best_of": 2}
GENERATING_PATHS = ("/v1/completions", "/v1/chat/completions")
MAX_SPEECH_CHARS = 120
FEWER_EXAMPLES = {"POST /v2/content/simplify": 6, "POST /v2/content/translate": 10}


@pytest.fixture(scope="module")
def fuzz_admin_key(stores) -> str:
    """An admin of its own: the fuzzer may delete its own account (DELETE /v2/auth/me) or revoke its keys."""
    from serve_app.bootstrap import create_api_key, create_user

    settings_ = stores.settings()
    email = f"fuzz-{uuid.uuid4().hex[:8]}@tests.local"
    asyncio.run(create_user(settings_, email, "correct-Horse-battery-9", "admin"))
    return asyncio.run(create_api_key(settings_, email, "fuzz", "admin"))["key"]


def _cap_generation(body: Any, path: str) -> Any:
    if not isinstance(body, dict):
        return body
    capped = dict(body)
    if path in GENERATING_PATHS and "max_tokens" not in capped and "max_completion_tokens" not in capped:
        capped["max_tokens"] = GENERATION_CAPS["max_tokens"]
    for field, cap in GENERATION_CAPS.items():
        value = capped.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and cap < value <= 1_000_000:
            capped[field] = cap
    if path.endswith("/speech") or path.endswith("/tts"):
        for field in ("input", "text"):
            if isinstance(capped.get(field), str):
                capped[field] = capped[field][:MAX_SPEECH_CHARS]
    return capped


@pytest.fixture
def api_schema(cpu_app: str):
    schema = schemathesis.openapi.from_url(f"{cpu_app}/openapi.json")
    schema.config.generation.update(allow_x00=True, with_security_parameters=False)

    @schema.hook
    def map_body(context, body):
        return _cap_generation(body, context.operation.path)

    return schema


def error_shape(response, case) -> None:
    """Every non-2xx answer is {"error": {"type", "message", "code"}}."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"answered {response.status_code} without the error shape: {response.text[:300]}")
    assert {"type", "message", "code"} <= set(body["error"]), body


def only_documented_503s(response, case) -> None:
    """No 5xx except a 503 the operation documents, with Retry-After."""
    status = response.status_code
    if status < 500:
        return
    documented = "503" in (case.operation.definition.raw.get("responses") or {})
    assert status == 503 and documented, f"answered {status}: {response.text[:300]}"
    assert int(response.headers.get("retry-after", "0")) > 0, "a 503 without Retry-After"


def _fuzz(operation, mode: GenerationMode, credential: str, statuses: Counter[int]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=FEWER_EXAMPLES.get(operation.label, EXAMPLES_PER_OPERATION), deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])  # no shrinking: time
    def run(case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {credential}"}  # not a generated one
        response = case.call(timeout=120)
        statuses[response.status_code] += 1
        for check in (only_documented_503s, error_shape):
            try:
                check(response, case)
            except AssertionError as exc:
                raise AssertionError(f"{case.method} {case.formatted_path} ({mode.value}): {exc}\n"
                                     f"  reproduce: {case.as_curl_command()}") from None

    run()


def test_no_request_gets_a_server_error_or_an_error_of_another_shape(api_schema, fuzz_admin_key):
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = {}
    # Deleting its own account ends the fuzzer's credential: that operation goes last.
    for operation in sorted((result.ok() for result in api_schema.get_all_operations()),
                            key=lambda op: op.label == "DELETE /v2/auth/me"):
        statuses[operation.label] = Counter()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, fuzz_admin_key, statuses[operation.label])
            except AssertionError as exc:
                failures.append(str(exc))
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): the positive run covers it
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert not failures, f"{len(failures)} operation(s) broke:\n" + "\n".join(failures)
    # The whole API was read from the spec, and the credential got the requests past authentication into the
    # handlers (most operations answered some request with a success).
    answered = sorted(label for label, counts in statuses.items() if any(200 <= code < 300 for code in counts))
    assert len(statuses) >= 40 and len(answered) >= 20, (len(statuses), answered)
