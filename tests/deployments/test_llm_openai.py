"""The fallback engines' OpenAI layer (deployments/llm_openai.py) on the real CTranslate2 SmolLM2: what it serves
it serves correctly, what it cannot honour it refuses with a 400 naming the field."""

from __future__ import annotations

import pytest

from deployments.common import Refusal
from deployments.llm_openai import TokenLevelOpenAI
from tests.deployments.test_llm_backends import load

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def layer(prepared_models) -> TokenLevelOpenAI:
    backend = load("ctranslate2", prepared_models, context_length=8192)

    async def generate(prompt, params):
        return (await backend.generate([prompt], [params]))[0]

    return TokenLevelOpenAI("ctranslate2", backend.tokenizer, backend.context_length, generate, backend.stream)


async def test_chat_whole_and_streamed(layer):
    body = {"model": "m", "messages": QUESTION, "max_tokens": 20, "temperature": 0}
    whole = await layer.openai("chat", body)
    assert whole["object"] == "chat.completion" and whole["model"] == "m"
    assert "Paris" in whole["choices"][0]["message"]["content"] and whole["choices"][0]["finish_reason"] == "stop"
    assert whole["usage"]["total_tokens"] == whole["usage"]["prompt_tokens"] + whole["usage"]["completion_tokens"]
    chunks = [c async for c in layer.openai_stream("chat", {**body, "stream_options": {"include_usage": True}})]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_continuous_usage_stats_put_the_usage_so_far_on_every_chunk(layer):
    """As vLLM does: what the ingress counts a stream the client leaves by."""
    body = {"model": "m", "messages": QUESTION, "max_tokens": 12, "temperature": 0, "stream": True}
    plain = [c async for c in layer.openai_stream("chat", body)]
    assert all("usage" not in c for c in plain)
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = [c async for c in layer.openai_stream("chat", {**body, "stream_options": options})]
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts) and counts[0] == 0 and 0 < counts[-1] <= 12
    assert chunks[-1]["choices"] == [] and chunks[-2]["usage"] == chunks[-1]["usage"]
    assert {c["usage"]["prompt_tokens"] for c in chunks} == {chunks[-1]["usage"]["prompt_tokens"]}


async def test_several_choices_and_stop_strings(layer):
    result = await layer.openai("chat", {"messages": QUESTION, "max_tokens": 10, "temperature": 1.0, "n": 3})
    assert [c["index"] for c in result["choices"]] == [0, 1, 2]
    stopped = await layer.openai("chat", {"messages": QUESTION, "max_tokens": 30, "temperature": 0, "stop": "France"})
    assert "France" not in stopped["choices"][0]["message"]["content"]


async def test_text_completions_from_text_or_token_ids(layer):
    ids = layer.tokenizer("The capital of France is")["input_ids"]
    from_text = await layer.openai("completion", {"prompt": "The capital of France is", "max_tokens": 5,
                                                  "temperature": 0})
    from_ids = await layer.openai("completion", {"prompt": ids, "max_tokens": 5, "temperature": 0})
    assert from_text["choices"][0]["text"] == from_ids["choices"][0]["text"]
    assert from_text["usage"]["prompt_tokens"] == len(ids)
    out_of_range = await layer.openai("completion", {"prompt": [10**9], "max_tokens": 5})
    assert (out_of_range.code, out_of_range.param) == (400, "prompt")


@pytest.mark.parametrize(("field", "value"), [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
    ("response_format", {"type": "json_object"}),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("presence_penalty", 0.5),
    ("logit_bias", {"42": 10}),
    ("top_k", 5),  # a vLLM extension
    ("functions", [{"name": "f", "parameters": {"type": "object"}}]),
    ("modalities", ["text", "audio"]),
    ("prediction", {"type": "content", "content": "x"}),
])
async def test_what_it_cannot_honour_is_refused_with_a_400(layer, field, value):
    body = {"messages": QUESTION, "max_tokens": 5, field: value}
    for answer in (await layer.openai("chat", body), [c async for c in layer.openai_stream("chat", body)][0]):
        assert isinstance(answer, Refusal) and (answer.code, answer.param) == (400, field)
        assert "vLLM" in answer.message


async def test_inert_values_and_neutral_fields_are_accepted(layer):
    body = {"messages": QUESTION, "max_tokens": 3, "tools": [], "tool_choice": "none", "logprobs": False,
            "response_format": {"type": "text"}, "presence_penalty": 0, "user": "u1", "metadata": {"a": "b"},
            "prompt_cache_key": "k", "safety_identifier": "s", "modalities": ["text"], "store": False}
    assert "choices" in await layer.openai("chat", body)


async def test_tool_turns_and_long_prompts_are_refused(layer):
    tool_turn = [*QUESTION, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "1", "content": "x"}]
    refused = await layer.openai("chat", {"messages": tool_turn, "max_tokens": 5})
    assert refused.param == "messages[1]"
    too_long = await layer.openai("chat", {"messages": [{"role": "user", "content": "cat " * 9000}],
                                           "max_tokens": 5})
    assert "maximum context length is 8192" in too_long.message and too_long.param == "messages"
    too_long = await layer.openai("completion", {"prompt": "cat " * 9000, "max_tokens": 5})
    assert too_long.param == "prompt"
    greedy_many = await layer.openai("chat", {"messages": QUESTION, "n": 2, "temperature": 0})
    assert greedy_many.param == "n"
