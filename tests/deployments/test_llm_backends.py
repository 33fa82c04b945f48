"""LLM backends on the packaged SmolLM2 (prepared to transformers and CTranslate2 int8), and the vLLM adapter
with its engine swapped for a test double (tests/support/fake_vllm.py)."""

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


# ---------------------------------------------------------------------------------------------- vLLM adapter


@pytest.fixture
def vllm(prepared_models):
    from tests.support import fake_vllm

    fake_vllm.ENGINES.clear()
    backend = load_vllm(prepared_models)
    return backend, fake_vllm.ENGINES[-1]


def load_vllm(models_dir):
    spec = BackendSpec(
        backend="vllm",
        model="prepared:smollm2-135m-instruct/hf",
        options={"engine_module": "tests.support.fake_vllm", "max_model_len": 4096, "gpu_memory_utilization": 0.5},
    )
    return load_chain([spec], LLM_BACKENDS, select_device("cuda"), models_dir).backend


async def test_vllm_adapter_passes_prompt_ids_and_sampling(vllm):
    backend, engine = vllm
    assert engine.args.extra == {"max_model_len": 4096, "gpu_memory_utilization": 0.5}
    assert backend.context_length == 4096
    out = await backend.generate([[5, 6, 7, 8]], [SamplingParams(max_tokens=3, temperature=0.0, seed=9)])
    assert out == [[5, 6, 7]]
    prompt, params = engine.requests[0]
    assert prompt == {"prompt_token_ids": [5, 6, 7, 8]}
    assert (params.max_tokens, params.temperature, params.seed) == (3, 0.0, 9)
    assert engine.aborted == []  # finished normally: nothing to abort


async def test_vllm_adapter_streams_deltas_and_aborts_when_closed_early(vllm):
    backend, engine = vllm
    stream = backend.stream(list(range(10, 30)), SamplingParams(max_tokens=20))
    deltas = []
    async for ids in stream:
        deltas.append(ids)
        if len(deltas) == 4:
            break
    await stream.aclose()
    assert deltas == [[10], [11], [12], [13]]  # cumulative outputs turned into new tokens only
    assert len(engine.aborted) == 1  # the engine was told to free the sequence


async def test_vllm_adapter_serves_lora_adapters(vllm):
    from deployments.backends.llm_base import LoRAAdapter

    backend, engine = vllm
    adapter = backend.load_adapter("algebra", LoRAAdapter("/adapters/algebra", {}))
    assert (adapter.lora_name, adapter.lora_int_id, adapter.lora_path) == ("algebra", 1, "/adapters/algebra")
    await backend.generate([[1, 2, 3]], [SamplingParams(max_tokens=2)], [adapter])
    assert engine.lora_requests[-1] is adapter
    assert backend.load_adapter("geometry", LoRAAdapter("/adapters/geometry", {})).lora_int_id == 2


async def test_other_backends_refuse_adapters(prepared_models):
    from deployments.backends.llm_base import AdaptersNotSupported, LoRAAdapter

    llm = load("ctranslate2", prepared_models, context_length=8192)
    with pytest.raises(AdaptersNotSupported):
        llm.load_adapter("x", LoRAAdapter("/adapters/x", {}))
    with pytest.raises(AdaptersNotSupported):
        await llm.generate([[1]], [GREEDY], ["an adapter"])
