"""/v1/embeddings on the real app (cpu profile, packaged MiniLM) over HTTP."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

MODEL = "all-minilm-l6-v2"
SENTENCES = [
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The French Revolution began in 1789.",
    "To add fractions, first find a common denominator.",
]


def embed(client: httpx.Client, texts, **extra) -> np.ndarray:
    response = client.post("/v1/embeddings", json={"input": texts, "model": MODEL, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    return np.array([item["embedding"] for item in sorted(body["data"], key=lambda d: d["index"])])


@pytest.fixture(scope="module")
def reference(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


def test_served_embeddings_equal_the_models_own_output(client, reference):
    served = embed(client, SENTENCES)
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    assert served.shape == (3, 384)
    assert np.min(np.sum(served * expected, axis=1)) >= 0.999
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)


def test_response_shape_and_usage(client, reference):
    response = client.post("/v1/embeddings", json={"input": "hello world", "model": MODEL})
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    tokens = len(reference.tokenizer("hello world")["input_ids"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert response.headers["x-request-id"]
    assert response.headers["server-timing"].startswith("app;dur=")
    assert response.headers["x-eduserve-device"] == "cpu"
    assert response.headers["x-eduserve-route"] == "embedder=cpu"


def test_similar_sentences_score_above_unrelated_ones(client):
    a, b, c = embed(client, [
        "How do plants make food from sunlight?",
        "Plants use photosynthesis to produce sugar from light.",
        "The stock market fell sharply on Tuesday.",
    ])
    assert a @ b > a @ c + 0.2


def test_base64_encoding_decodes_to_the_float_vectors(client):
    floats = embed(client, SENTENCES[:2])
    response = client.post(
        "/v1/embeddings", json={"input": SENTENCES[:2], "model": MODEL, "encoding_format": "base64"}
    )
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in response.json()["data"]])
    np.testing.assert_array_equal(decoded, floats.astype(np.float32))
    half = client.post("/v1/embeddings", json={"input": SENTENCES[:2], "model": MODEL, "encoding_format": "base64",
                                               "embed_dtype": "float16", "endianness": "big"})  # vLLM's options
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype=">f2") for d in half.json()["data"]])
    np.testing.assert_allclose(decoded, floats, atol=1e-3)


def test_model_may_be_omitted_or_given_by_alias(client):
    plain = client.post("/v1/embeddings", json={"input": "x y z"}).json()
    alias = client.post("/v1/embeddings", json={"input": "x y z", "model": "sentence-transformers/all-MiniLM-L6-v2"})
    assert plain["model"] == alias.json()["model"] == MODEL
    assert plain["data"][0]["embedding"] == alias.json()["data"][0]["embedding"]


def test_openai_sdk_works_unmodified(cpu_app, admin_key, reference):
    import openai

    sdk = openai.OpenAI(base_url=f"{cpu_app}/v1", api_key=admin_key)
    result = sdk.embeddings.create(model=MODEL, input=SENTENCES)  # the SDK asks for base64 and decodes it
    vectors = np.array([item.embedding for item in result.data])
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    assert np.min(np.sum(vectors * expected, axis=1)) >= 0.999
    assert result.usage.prompt_tokens > 0 and result.model == MODEL
    single = sdk.embeddings.create(model=MODEL, input="one text", encoding_format="float")
    assert len(single.data[0].embedding) == 384


def embedder_stats(client: httpx.Client) -> dict:
    return embedder_status(client)["deployments"]["primary"]["stats"]


def embedder_status(client: httpx.Client) -> dict:
    models = client.get("/v1/models").json()["data"]
    return next(m for m in models if m["role"] == "embedder")["status"]


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_vectors(client, cpu_app, reference):
    before = embedder_stats(client)
    texts = [f"sentence number {i} about science" for i in range(64)]

    async def burst():
        async with httpx.AsyncClient(base_url=cpu_app, timeout=120, headers=client.headers) as http:
            return await asyncio.gather(*(
                http.post("/v1/embeddings", json={"input": [text] * (1 + i % 3), "model": MODEL})
                for i, text in enumerate(texts)
            ))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 64
    expected = reference.encode(texts, normalize_embeddings=True)
    for i, response in enumerate(responses):
        body = response.json()
        assert [item["index"] for item in body["data"]] == list(range(1 + i % 3))
        served = np.array([item["embedding"] for item in body["data"]])
        assert np.min(served @ expected[i]) >= 0.999, f"request {i} got another request's vector"
        assert response.headers["x-eduserve-route"] == "embedder=cpu"
    after = embedder_stats(client)
    batches = after["batches"] - before["batches"]
    items = after["items"] - before["items"]
    assert items == sum(1 + i % 3 for i in range(64))
    assert batches < 64, f"no batching: {batches} batches for 64 requests"
    assert after["max_batch_size_seen"] > 3
    coalescing = embedder_status(client)["coalescing"]
    assert coalescing["calls"] < coalescing["requests"]


def test_one_request_with_many_inputs_is_split_by_the_token_budget(client):
    before = embedder_stats(client)
    long_texts = ["a long sentence " * 90 + str(i) for i in range(40)]  # truncated to 256 tokens; 40 x 256 > 8192
    vectors = embed(client, long_texts, truncate_prompt_tokens=-1)
    after = embedder_stats(client)
    assert vectors.shape == (40, 384)
    assert after["forward_passes"] - before["forward_passes"] >= 2


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"input": []}, 400, "bad_request"),
        ({"input": ""}, 400, "bad_request"),
        ({"input": ["ok", ""]}, 400, "bad_request"),
        ({"input": [[1, 2], []]}, 400, "bad_request"),
        ({"input": [[101, 30522]]}, 400, "bad_request"),  # outside MiniLM's vocabulary
        ({"input": [-1, 5]}, 400, "bad_request"),
        ({"input": [True]}, 400, "bad_request"),
        ({"input": ["ok", 5]}, 400, "bad_request"),
        ({"input": {"text": "x"}}, 400, "bad_request"),
        ({"input": None}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"input": "x", "encoding_format": "int8"}, 400, "bad_request"),
        ({"input": "x", "dimensions": 128}, 400, "bad_request"),
        ({"input": "x", "use_activation": False}, 400, "bad_request"),  # vLLM's: vectors before normalising
        ({"input": "x", "encoding_format": "base64", "embed_dtype": "fp8_e4m3"}, 400, "bad_request"),
        ({"input": "x", "truncation_side": "middle"}, 400, "bad_request"),
        ({"input": "x", "model": "gpt-nope"}, 404, "model_not_found"),
        ({"input": "x", "model": "all-minilm-l6-v2-rerank"}, 400, "bad_request"),
        ({"input": ["x"] * 257}, 413, "payload_too_large"),
        ({"input": "y" * 40_000}, 413, "payload_too_large"),
    ],
)
def test_bad_input_gets_the_error_shape_with_a_4xx(client, payload, status, code):
    response = client.post("/v1/embeddings", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"type", "message", "code"} <= set(error) <= {"type", "message", "code", "param"}
    assert error["code"] == code and error["message"]


def test_token_id_input_embeds_the_text_it_stands_for(client, reference):
    """Token ids of the served model's vocabulary, as vLLM accepts them (one list, or a list of lists)."""
    ids = reference.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    by_text = client.post("/v1/embeddings", json={"input": "hello world"}).json()["data"][0]["embedding"]
    for payload in (ids, [ids, ids]):
        response = client.post("/v1/embeddings", json={"input": payload})
        assert response.status_code == 200, response.text
        for item in response.json()["data"]:
            np.testing.assert_allclose(item["embedding"], by_text, atol=1e-6)


LONG = " ".join(f"word{i} means something else" for i in range(150))  # ~900 tokens, MiniLM reads 256


def test_input_longer_than_the_model_reads_is_refused_not_cut(client, reference):
    """As OpenAI and vLLM: an input past the model's window is an error naming it, not silently embedded in part.
    Checked before texts of concurrent requests are merged, so only the offending request fails."""
    ids = reference.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    for payload in (LONG, ["short", LONG], ids, [ids[:10], ids]):
        response = client.post("/v1/embeddings", json={"input": payload})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["param"] == "input"
        assert "256" in error["message"] and "truncate_prompt_tokens" in error["message"]
    assert client.post("/v1/embeddings", json={"input": "short"}).status_code == 200


def whole_words_within(tokenizer, text: str, limit: int, side: str) -> str:
    """The most words of `text` from its start (right) or end (left) whose tokens, special ones included, fit."""
    words = text.split(" ") if side == "right" else text.split(" ")[::-1]
    kept: list[str] = []
    for word in words:
        candidate = kept + [word]
        joined = " ".join(candidate if side == "right" else candidate[::-1])
        if len(tokenizer(joined)["input_ids"]) > limit:
            break
        kept = candidate
    return " ".join(kept if side == "right" else kept[::-1])


@pytest.mark.parametrize("limit", [-1, 256, 40])
@pytest.mark.parametrize("side", ["right", "left"])
def test_truncate_prompt_tokens_embeds_the_tokens_kept(client, reference, limit, side):
    """vLLM's `truncate_prompt_tokens` (-1: the model's window) and `truncation_side` ('right' keeps the first
    tokens, 'left' the last; special tokens count): a text keeps the whole words that fit, token ids exactly that
    many ids; the vector is that of what was kept, and usage counts its tokens."""
    kept = reference.max_seq_length if limit == -1 else limit
    tokenizer = reference.tokenizer
    ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    cut_ids = ids[:kept - 2] if side == "right" else ids[-(kept - 2):]
    for payload, expected_text in ((LONG, whole_words_within(tokenizer, LONG, kept, side)),
                                   (ids, tokenizer.decode(cut_ids))):
        response = client.post("/v1/embeddings", json={
            "input": payload, "truncate_prompt_tokens": limit, "truncation_side": side})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = reference.encode(expected_text, normalize_embeddings=True)
        assert float(np.dot(body["data"][0]["embedding"], expected)) >= 0.999
        assert body["usage"]["prompt_tokens"] == len(tokenizer(expected_text)["input_ids"])
    assert len(tokenizer(whole_words_within(tokenizer, LONG, kept, side))["input_ids"]) >= kept - 2
    short = client.post("/v1/embeddings", json={"input": "hello world", "truncate_prompt_tokens": limit}).json()
    assert short["usage"]["prompt_tokens"] == 4  # nothing to cut


@pytest.mark.parametrize(("limit", "side"), [(257, None), (2, None), (-2, None), (10, "middle")])
def test_truncation_settings_out_of_range_are_refused(client, limit, side):
    payload = {"input": LONG, "truncate_prompt_tokens": limit, **({"truncation_side": side} if side else {})}
    response = client.post("/v1/embeddings", json=payload)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == ("truncation_side" if side else "truncate_prompt_tokens")


def test_invalid_json_and_oversized_bodies(client):
    response = client.post("/v1/embeddings", content=b'{"input": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    huge = b'{"input": "' + b"z" * (9 * 1024 * 1024) + b'"}'
    response = client.post("/v1/embeddings", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_streamed_oversized_body_is_refused(client):
    def chunks():
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_unknown_route_and_method_use_the_error_shape(client):
    assert client.get("/v1/nothing-here").json()["error"]["code"] == "not_found"
    response = client.get("/v1/embeddings")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
