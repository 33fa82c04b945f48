"""/v1/chat/completions on the real app: SmolLM2 on CTranslate2 int8, the openai SDK, streamed and not."""

from __future__ import annotations

import json

import openai
import pytest

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def sdk(cpu_app, admin_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cpu_app}/v1", api_key=admin_key)


def test_openai_sdk_chat_completion(sdk):
    completion = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30, temperature=0)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL


def test_openai_sdk_streaming(sdk):
    stream = sdk.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=30, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 2, deltas  # incremental (word groups released by the output filter), not one blob
    assert "Paris" in "".join(deltas)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage  # include_usage: a last chunk with no choices, only usage
    assert chunks[-1].choices == [] and usage.completion_tokens >= len(deltas) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_and_whole_answer_agree(sdk):
    whole = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30, temperature=0)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30, temperature=0, stream=True)
        if c.choices
    )
    assert streamed == whole.choices[0].message.content


def test_length_limit_and_stop_strings(sdk):
    short = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    stopped = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30, temperature=0, stop=["France"])
    assert "France" not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_response_says_where_it_ran(client):
    response = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 5})
    assert response.headers["x-eduserve-device"] == "cpu"
    # the safety pipeline's calls show up too: input check, the model, then the output check
    assert response.headers["x-eduserve-route"].split(",")[:2] == ["safety=cpu", "llm=cpu"]


def test_raw_sse_format(client):
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": QUESTION, "max_tokens": 10, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


def test_prompt_longer_than_the_context_is_a_400(client):
    too_long = [{"role": "user", "content": "cat " * 9000}]  # ~9000 tokens; the context is 8192
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json={"messages": too_long, "max_tokens": 64, "stream": stream})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "context" in error["message"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"messages": []}, 422, "validation_error"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 422, "validation_error"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 422, "validation_error"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 422,
         "validation_error"),
        ({"messages": QUESTION, "n": 2}, 422, "validation_error"),
        ({"messages": QUESTION, "temperature": 3}, 422, "validation_error"),
        ({"messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, 422, "validation_error"),
        ({"messages": QUESTION, "max_tokens": 100_000}, 422, "validation_error"),
        ({"messages": QUESTION, "model": "gpt-5"}, 404, "model_not_found"),
        ({"messages": QUESTION, "model": "all-minilm-l6-v2"}, 400, "bad_request"),
    ],
)
def test_bad_chat_requests(client, payload, status, code):
    response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
