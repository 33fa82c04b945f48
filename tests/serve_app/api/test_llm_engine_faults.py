"""The vLLM engine dies under the running app: the replica turns unhealthy and is replaced, the CTranslate2
fallback deployment answers meanwhile, and what the fallback engine cannot honour is refused with a 400."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from tests.serve_app.api.test_chat_completions import MODEL, QUESTION, WEATHER, llm_status
from tests.support.wait import wait_for

pytestmark = pytest.mark.disruptive  # sorted after the other cpu-app tests: it costs an engine restart


def engine_processes(replica_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(replica_pid).children(recursive=True) if "EngineCore" in p.name()]


def test_a_dead_engine_is_replaced_while_the_fallback_answers(client: httpx.Client):
    before = llm_status(client)
    primary = before["deployments"]["primary"]
    assert primary["active"]["backend"] == "vllm"
    (engine,) = engine_processes(primary["pid"])
    os.kill(engine.pid, signal.SIGKILL)

    # Chat keeps working: the failed calls go to LLMFallback (CTranslate2).
    answers = [client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 20, "temperature": 0})
               for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    assert all("Paris" in a.json()["choices"][0]["message"]["content"] for a in answers)
    counts = llm_status(client)["routing"]["counts"]
    assert counts.get("fault", 0) + counts.get("breaker_open", 0) >= 1 + before["routing"]["counts"].get("fault", 0)
    streamed = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 10, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")

    # What CTranslate2 cannot do is refused, never answered as if the field were not there.
    refused = client.post("/v1/chat/completions", json={
        "messages": QUESTION, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 20})
    assert refused.status_code == 400, refused.text
    assert "`tools`" in refused.json()["error"]["message"] and "vLLM" in refused.json()["error"]["message"]

    # Serve's health check finds the dead engine and starts a new replica, which serves vLLM again.
    def replaced():
        status = llm_status(client)
        new = status["deployments"]["primary"]
        return new if new.get("ok") and new.get("replica") != primary["replica"] else None

    new = wait_for(replaced, 240, "a new LLM replica")
    assert new["active"]["backend"] == "vllm" and engine_processes(new["pid"])
    wait_for(lambda: llm_status(client)["routing"]["breaker"] == "closed" or client.post(
        "/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 1}).status_code == 200, 60, "the breaker")

    def tools_work():
        response = client.post("/v1/chat/completions", json={
            "messages": QUESTION, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 60})
        return response.status_code == 200 and response.json()["choices"][0]["message"]["tool_calls"]

    wait_for(tools_work, 60, "tool calls on the new vLLM replica")
    assert llm_status(client)["deployments"]["primary"]["active"]["model"].endswith(f"{MODEL}/hf")
