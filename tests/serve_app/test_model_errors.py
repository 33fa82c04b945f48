"""A replica's refusal (`deployments.common.Refusal`) as the API's error: the one contract between the model
replicas and the ingress (pure logic; the real replicas' refusals are exercised through Ray by the API tests)."""

from __future__ import annotations

import pickle

import pytest

from deployments.common import Refusal
from serve_app.errors import EduserveError, ErrorCode
from serve_app.model_errors import checked


def raised(refusal: Refusal) -> EduserveError:
    with pytest.raises(EduserveError) as caught:
        checked("llm", refusal)
    return caught.value


def test_a_refusal_named_by_its_error_code_is_that_error_with_its_param():
    error = raised(Refusal("unknown_voice", "voice 'x' is not available", "voice"))
    assert (error.code, error.message, error.param) == (ErrorCode.UNKNOWN_VOICE, "voice 'x' is not available", "voice")
    assert "Retry-After" not in error.headers  # the caller's mistake: retrying will not help


def test_engine_statuses_map_to_our_codes_and_a_server_side_one_never_leaks_its_message():
    assert raised(Refusal(400, "This model's maximum context length is 8192 tokens")).code \
        is ErrorCode.CONTEXT_LENGTH_EXCEEDED
    assert raised(Refusal(404, "The model `x` does not exist.", "model")).code is ErrorCode.MODEL_NOT_FOUND
    assert raised(Refusal(422, "bad value", "temperature")).code is ErrorCode.BAD_REQUEST
    unavailable = raised(Refusal(503, "engine restarting"))
    assert unavailable.code is ErrorCode.MODEL_UNAVAILABLE and unavailable.headers == {"Retry-After": "5"}
    failed = raised(Refusal(500, "Traceback ... secret internals"))
    assert failed.code is ErrorCode.MODEL_FAILED and "secret" not in failed.message
    assert raised(Refusal("no_such_code", "odd")).code is ErrorCode.BAD_REQUEST  # an unknown code: the caller's


def test_from_openai_reads_a_dict_or_vllms_error_info_and_answers_pass_through():
    from vllm.entrypoints.serve.engine.protocol import ErrorInfo

    info = ErrorInfo(message="`n` must be 1 when greedy", type="BadRequestError", param="n", code=400)
    assert Refusal.from_openai(info) == Refusal(400, "`n` must be 1 when greedy", "n")
    assert Refusal.from_openai({"message": "too long", "code": 400}) == Refusal(400, "too long", None)
    assert Refusal.from_openai({}) == Refusal(400, "rejected", None)
    assert pickle.loads(pickle.dumps(Refusal("bad_request", "x", "input"))) == Refusal("bad_request", "x", "input")
    answer = {"error": "a field of the model's own answer, not a refusal", "choices": []}
    assert checked("llm", answer) is answer
