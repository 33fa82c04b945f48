"""Several models per replica with `@serve.multiplexed`: the test app's Embedder also serves three tiny local
models (two at a time) and its Translator two language pairs (tests/conftest.py: Stores.multiplexed_models)."""

from __future__ import annotations

import asyncio

import ctranslate2
import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer


def embedder_multiplex(client: httpx.Client) -> dict:
    models = client.get("/v1/models").json()["data"]
    default = next(m for m in models if m["id"] == "all-minilm-l6-v2")
    return default["status"]["deployments"]["primary"]["multiplexed"]


def loaded_on(client: httpx.Client, model_id: str) -> list[str]:
    return next(m for m in client.get("/v1/models").json()["data"] if m["id"] == model_id)["status"]["loaded_on"]


def embed(client: httpx.Client, model: str, texts: list[str]) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"input": texts, "model": model})
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]])


@pytest.fixture(scope="module")
def references(tiny_models):
    from sentence_transformers import SentenceTransformer

    return {name: SentenceTransformer(str(tiny_models[f"embed-{name}"]), device="cpu") for name in "abc"}


TEXTS = ["Cells divide by mitosis.", "Rivers carry water to the sea."]


def test_lru_eviction_and_reload_with_correct_answers(client, references):
    before = embedder_multiplex(client)
    for name in "abc":  # A, B, then C: C evicts A (two models per replica)
        vectors = embed(client, f"tiny-embed-{name}", TEXTS)
        expected = references[name].encode(TEXTS, normalize_embeddings=True)
        assert np.min(np.sum(vectors * expected, axis=1)) >= 0.999, name  # answered by the model it named
    state = embedder_multiplex(client)
    assert state["loaded"] == ["tiny-embed-b", "tiny-embed-c"]
    assert state["evictions"] >= before["evictions"] + 1
    assert loaded_on(client, "tiny-embed-a") == [] and loaded_on(client, "tiny-embed-c") != []

    loads = state["loads"]
    vectors = embed(client, "tiny-embed-a", TEXTS)  # A again: reloaded, B evicted
    expected = references["a"].encode(TEXTS, normalize_embeddings=True)
    assert np.min(np.sum(vectors * expected, axis=1)) >= 0.999
    state = embedder_multiplex(client)
    assert state["loads"] == loads + 1 and state["loaded"] == ["tiny-embed-c", "tiny-embed-a"]
    # the models differ: the same text gets different vectors from different models
    assert np.max(np.abs(embed(client, "tiny-embed-c", TEXTS) - vectors)) > 0.1


def test_concurrent_requests_for_different_models_all_succeed(client, cpu_app, references, minilm_path):
    from sentence_transformers import SentenceTransformer

    default = SentenceTransformer(minilm_path, device="cpu")
    models = ["tiny-embed-a", "tiny-embed-b", "tiny-embed-c", "all-minilm-l6-v2"] * 4

    async def burst():
        async with httpx.AsyncClient(base_url=cpu_app, headers=client.headers, timeout=120) as http:
            return await asyncio.gather(*(
                http.post("/v1/embeddings", json={"input": TEXTS, "model": m}) for m in models
            ))

    for model, response in zip(models, asyncio.run(burst()), strict=True):
        assert response.status_code == 200, response.text
        vectors = np.array([d["embedding"] for d in response.json()["data"]])
        reference = default if model == "all-minilm-l6-v2" else references[model[-1]]
        assert np.min(np.sum(vectors * reference.encode(TEXTS, normalize_embeddings=True), axis=1)) >= 0.999


def test_unknown_models_are_refused_without_a_load_attempt(client):
    loads = embedder_multiplex(client)["loads"]
    for model in ("tiny-embed-z", "/etc/passwd", "../models/other"):
        response = client.post("/v1/embeddings", json={"input": "x", "model": model})
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert embedder_multiplex(client)["loads"] == loads


def test_serves_multiplexed_model_header_selects_the_model(client, references):
    response = client.post("/v1/embeddings", json={"input": TEXTS}, headers={"serve_multiplexed_model_id": "tiny-embed-b"})
    assert response.status_code == 200 and response.json()["model"] == "tiny-embed-b"
    vectors = np.array([d["embedding"] for d in response.json()["data"]])
    assert np.min(np.sum(vectors * references["b"].encode(TEXTS, normalize_embeddings=True), axis=1)) >= 0.999


def direct_translation(ct2_dir, text: str) -> str:
    tokenizer = AutoTokenizer.from_pretrained(str(ct2_dir))
    translator = ctranslate2.Translator(str(ct2_dir), compute_type="int8")
    source = tokenizer.convert_ids_to_tokens(tokenizer.encode(text, truncation=True, max_length=100))
    hypothesis = translator.translate_batch([source], beam_size=2, max_decoding_length=100)[0].hypotheses[0]
    return tokenizer.decode(tokenizer.convert_tokens_to_ids(hypothesis), skip_special_tokens=True)


def test_two_translation_pairs_and_an_unknown_pair_falls_back_to_the_llm(client, tiny_models):
    text = "the students read a book about volcanoes"
    for pair, target in (("en-fr", "French"), ("en-de", "de")):
        response = client.post("/v2/content/translate", json={"text": text, "target_language": target})
        body = response.json()
        assert response.status_code == 200, response.text
        assert (body["engine"], body["model"]) == ("translator", pair)
        # random weights: the output is noise, but exactly the noise this model gives when called directly
        assert body["text"] == direct_translation(tiny_models[f"marian-{pair}"], text)
    fallback = client.post("/v2/content/translate", json={"text": text, "target_language": "es"}).json()
    assert fallback["engine"] == "llm"
    pairs = {m["id"]: m for m in client.get("/v1/models").json()["data"] if m["role"] == "translator"}
    assert {"en-fr", "en-de"} <= set(pairs) and pairs["en-fr"]["status"]["loaded_on"]


def test_a_long_text_is_translated_whole_sentence_by_sentence(client, tiny_models):
    # ~400 tokens in the first paragraph, four times the model's window (max_length 100)
    sentences = [f"The volcano number {i} erupted after a long quiet time." for i in range(30)]
    text = " ".join(sentences) + "\n\nThe end."
    response = client.post("/v2/content/translate", json={"text": text, "target_language": "fr"})
    body = response.json()
    assert response.status_code == 200 and body["engine"] == "translator", response.text
    first, last = body["text"].split("\n\n")
    model = tiny_models["marian-en-fr"]
    assert first == " ".join(direct_translation(model, sentence) for sentence in sentences)
    assert last == direct_translation(model, "The end.")
