"""/v1/rerank on the real app (cpu profile: bi-encoder scoring with the packaged MiniLM)."""

from __future__ import annotations

import pytest

PASSAGES = [
    "The Pythagorean theorem relates the sides of a right triangle: a² + b² = c².",
    "Mitochondria produce most of the chemical energy that powers a cell.",
    "William Shakespeare wrote Romeo and Juliet.",
    "Water boils at 100 degrees Celsius at sea level.",
]


def test_the_relevant_passage_comes_first(client):
    response = client.post("/v1/rerank", json={"query": "Which part of the cell makes energy?", "documents": PASSAGES})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["index"] == 1
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    assert "document" not in results[0] or results[0]["document"] is None


def test_top_n_and_return_documents(client):
    response = client.post("/v1/rerank", json={
        "query": "Who wrote Romeo and Juliet?",
        "documents": [{"text": p} for p in PASSAGES],
        "top_n": 2,
        "return_documents": True,
        "model": "all-minilm-l6-v2-rerank",
    })
    body = response.json()
    assert len(body["results"]) == 2 and body["results"][0]["index"] == 2
    assert body["results"][0]["document"]["text"] == PASSAGES[2]
    assert body["model"] == "all-minilm-l6-v2-rerank" and body["usage"]["total_tokens"] > 0


def test_scores_do_not_depend_on_document_order(client):
    query = "boiling point of water"
    forward = client.post("/v1/rerank", json={"query": query, "documents": PASSAGES}).json()["results"]
    backward = client.post("/v1/rerank", json={"query": query, "documents": PASSAGES[::-1]}).json()["results"]
    by_text_forward = {PASSAGES[r["index"]]: r["relevance_score"] for r in forward}
    by_text_backward = {PASSAGES[::-1][r["index"]]: r["relevance_score"] for r in backward}
    for text, score in by_text_forward.items():
        assert abs(score - by_text_backward[text]) < 1e-5


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"query": "q", "documents": []}, 400, "bad_request"),
        ({"query": "", "documents": ["a"]}, 400, "bad_request"),
        ({"query": "   ", "documents": ["a"]}, 400, "bad_request"),
        ({"documents": ["a"]}, 400, "bad_request"),
        ({"query": "q", "documents": [1]}, 400, "bad_request"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 400, "bad_request"),
        ({"query": "q", "documents": ["a"], "model": "nope"}, 404, "model_not_found"),
        ({"query": "q", "documents": ["a"], "model": "all-minilm-l6-v2"}, 400, "bad_request"),
        ({"query": "q", "documents": ["a"] * 1001}, 413, "payload_too_large"),
        ({"query": "q" * 40_000, "documents": ["a"]}, 413, "payload_too_large"),
    ],
)
def test_bad_rerank_input(client, payload, status, code):
    response = client.post("/v1/rerank", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_cohere_v2_shape(client):
    """`POST /v2/rerank` as Cohere's v2 client calls it: results best first, billed units and tokens in `meta`."""
    response = client.post("/v2/rerank", json={
        "model": "all-minilm-l6-v2-rerank", "query": "Which part of the cell makes energy?", "documents": PASSAGES,
        "top_n": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]][0] == 1 and len(body["results"]) == 2
    assert body["meta"]["api_version"]["version"] == "2" and body["meta"]["billed_units"]["search_units"] == 1
    assert body["meta"]["tokens"]["input_tokens"] > 0 and "document" not in body["results"][0]


def test_cohere_v2_max_tokens_per_doc_cuts_each_document(client):
    query = "Who wrote Romeo and Juliet?"
    document = "Bananas are yellow fruit. " * 20 + PASSAGES[2]  # the answer comes after the first 100 tokens
    whole = client.post("/v2/rerank", json={"query": query, "documents": [document]}).json()
    cut = client.post("/v2/rerank", json={"query": query, "documents": [document], "max_tokens_per_doc": 20}).json()
    assert cut["meta"]["tokens"]["input_tokens"] < whole["meta"]["tokens"]["input_tokens"]
    assert cut["results"][0]["relevance_score"] != whole["results"][0]["relevance_score"]
    bad = client.post("/v2/rerank", json={"query": query, "documents": [document], "max_tokens_per_doc": 0})
    assert bad.status_code == 422
