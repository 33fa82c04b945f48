"""Token-level LLM backends on the packaged SmolLM2 (prepared to transformers and CTranslate2 int8), and how a
profile's vLLM options reach vLLM's parser. The vLLM engine itself runs in the app (tests/serve_app/api)."""

from __future__ import annotations

import asyncio

import pytest

from deployments.backends.llm_base import SamplingParams
from deployments.backends.registry import LLM_BACKENDS
from deployments.common import load_chain, select_device
from deployments.llm_text import IncrementalDecoder, fit_history
from deployments.spec import BackendSpec

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
GREEDY = SamplingParams(max_tokens=30, temperature=0.0)
VARIANTS = {"ctranslate2": "ct2-int8", "transformers": "hf"}


def load(backend: str, models_dir, **options):
    spec = BackendSpec(backend=backend, model=f"prepared:smollm2-135m-instruct/{VARIANTS[backend]}", options=options)
    return load_chain([spec], LLM_BACKENDS, select_device("cpu"), models_dir).backend


@pytest.fixture(scope="module", params=list(VARIANTS))
def llm(request, prepared_models):
    return load(request.param, prepared_models, context_length=8192)


def prompt_of(llm, messages=QUESTION):
    return fit_history(llm.tokenizer, messages, None, llm.context_length, 64)[1]


async def test_answers_the_capital_of_france(llm):
    (ids,) = await llm.generate([prompt_of(llm)], [GREEDY])
    answer = llm.tokenizer.decode(ids, skip_special_tokens=True)
    assert "Paris" in answer, answer


async def test_streams_token_by_token(llm):
    decoder = IncrementalDecoder(llm.tokenizer)
    pieces = [decoder.push(ids) async for ids in llm.stream(prompt_of(llm), GREEDY)]
    pieces.append(decoder.finish())
    assert len([p for p in pieces if p]) >= 4
    assert "Paris" in "".join(pieces)
    (whole,) = await llm.generate([prompt_of(llm)], [GREEDY])
    assert decoder.ids == whole  # streaming and batch generation agree under greedy decoding


async def test_closing_a_stream_stops_generation(llm):
    story = [{"role": "system", "content": "You write long stories."},
             {"role": "user", "content": "Tell me a very long story about a dragon who learns maths."}]
    stream = llm.stream(prompt_of(llm, story), SamplingParams(max_tokens=400, temperature=0.8, seed=1))
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    await asyncio.sleep(0.5)
    assert received == 3
    # the next generation runs at once: nothing is still decoding the abandoned story
    (ids,) = await asyncio.wait_for(llm.generate([prompt_of(llm)], [GREEDY]), timeout=30)
    assert ids


async def test_sampling_with_a_seed_is_reproducible_on_transformers(prepared_models):
    # CTranslate2 does not honour per-request seeds (see CTranslate2LLM._sampling); transformers does.
    llm = load("transformers", prepared_models, context_length=8192)
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=1234)
    first, second = await llm.generate([prompt_of(llm)] * 2, [params, params])
    assert first == second
    assert first != (await llm.generate([prompt_of(llm)], [SamplingParams(20, 1.0, 0.9, seed=99)]))[0]


async def test_max_tokens_bounds_the_answer(llm):
    (ids,) = await llm.generate([prompt_of(llm)], [SamplingParams(max_tokens=3, temperature=0.0)])
    assert 1 <= len(ids) <= 3


def test_a_broken_primary_model_path_falls_back_to_the_next_backend(prepared_models, tmp_path):
    chain = [
        BackendSpec(backend="ctranslate2", model=str(tmp_path / "no-such-ct2-model")),
        BackendSpec(backend="transformers", model="prepared:smollm2-135m-instruct/hf"),
    ]
    loaded = load_chain(chain, LLM_BACKENDS, select_device("cpu"), prepared_models)
    assert loaded.spec.backend == "transformers"
    assert loaded.describe()["failed_before"][0]["backend"] == "ctranslate2"


# ---------------------------------------------------------------------------------------------- engine options


def test_vllm_options_become_vllm_serve_flags():
    from deployments.backends.vllm_backend import cli_flags, engine_arguments

    options = {"served_model_name": ["a", "b"], "enforce_eager": True, "enable_prefix_caching": False,
               "max_model_len": 4096, "compilation_config": {"mode": 0}, "seed": None}
    assert cli_flags("/m", options) == [
        "--model", "/m", "--served-model-name", "a", "b", "--enforce-eager", "--no-enable-prefix-caching",
        "--max-model-len", "4096", "--compilation-config", '{"mode": 0}']
    args = engine_arguments("/m", options)  # vLLM's own parser
    assert (args.served_model_name, args.max_model_len, args.enforce_eager) == (["a", "b"], 4096, True)
    with pytest.raises(ValueError, match="invalid vLLM options"):
        engine_arguments("/m", {"max_modle_len": 4096})  # a typo is a load failure, never ignored


async def test_other_backends_refuse_adapters(prepared_models):
    from deployments.backends.llm_base import AdaptersNotSupported

    llm = load("ctranslate2", prepared_models, context_length=8192)
    with pytest.raises(AdaptersNotSupported):
        await llm.generate([[1]], [GREEDY], ["an adapter"])


async def test_one_bad_request_fails_alone_in_a_batch():
    """The LLM deployment's batch of token-level generations (deployments/llm.py): when the batched call fails,
    each request is retried on its own and only the bad one fails."""
    from deployments.llm import Failed, generate_isolated

    calls = []

    async def generate(prompts, params, adapters):
        calls.append(len(prompts))
        if [666] in prompts:
            raise RuntimeError("the engine cannot take this prompt")
        return [[len(p)] for p in prompts]

    items = [([1], GREEDY, None), ([666], GREEDY, None), ([2, 3], GREEDY, None)]
    results = await generate_isolated(generate, items)
    assert results[0] == [1] and results[2] == [2] and isinstance(results[1], Failed)
    assert calls == [3, 1, 1, 1]  # one batched call, then each request alone
    assert await generate_isolated(generate, items[:1]) == [[1]]
    with pytest.raises(RuntimeError):
        await generate_isolated(generate, items[1:2])  # alone, its own failure is raised as is
