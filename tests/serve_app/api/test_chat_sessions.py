"""/v2/chat on the real app: sessions in PostgreSQL, context in Redis, answers streamed as SSE."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.support.accounts import new_student
from tests.support.sse import sse_events
from tests.support.wait import wait_for


@pytest.fixture
def alice(cpu_app):
    http = new_student(cpu_app, "chat")
    yield http
    http.close()


@pytest.fixture
def bob(cpu_app):
    http = new_student(cpu_app, "chat")
    yield http
    http.close()


def send(http: httpx.Client, session_id: str, content: str, **options) -> list[tuple[str, dict]]:
    body = {"content": content, "temperature": 0, "max_tokens": 30, **options}
    with http.stream("POST", f"/v2/chat/{session_id}/messages", json=body) as response:
        assert response.status_code == 200, response.read()
        return sse_events(response)


def new_session(http: httpx.Client, **body) -> str:
    response = http.post("/v2/chat", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_turn_streams_tokens_then_stores_both_messages(alice):
    session = new_session(alice)
    events = send(alice, session, "What is the capital of France?")
    tokens = [data["delta"] for name, data in events if name == "token"]
    done = [data for name, data in events if name == "done"]
    assert len(tokens) >= 2 and "Paris" in "".join(tokens)  # word groups, each checked before release
    assert len(done) == 1 and done[0]["finish_reason"] == "stop" and done[0]["device"] == "cpu"
    assert done[0]["usage"]["completion_tokens"] > 0

    detail = alice.get(f"/v2/chat/{session}").json()
    assert detail["title"] == "What is the capital of France?"  # titled from the first message
    user, assistant = detail["messages"]
    assert (user["role"], user["status"], user["id"]) == ("user", "completed", done[0]["user_message_id"])
    assert assistant["role"] == "assistant" and assistant["status"] == "completed"
    assert assistant["content"] == "".join(tokens) and assistant["id"] == done[0]["message_id"]


def test_history_is_sent_with_the_next_turn(alice, stores):
    session = new_session(alice)
    first = [d for n, d in send(alice, session, "My name is Ada. What is 2 + 2?") if n == "done"][0]
    second = [d for n, d in send(alice, session, "Thanks!") if n == "done"][0]
    # the second prompt carries the first exchange: many more tokens than "Thanks!" alone
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]

    import asyncio

    import redis.asyncio as aioredis

    async def cached():
        client = aioredis.from_url(stores.redis_url)
        try:
            return json.loads(await client.get(f"eduserve:chat-session:{session}"))
        finally:
            await client.aclose()

    context = asyncio.run(cached())  # the session's context lives in Redis between turns
    assert [m["role"] for m in context["messages"]] == ["user", "assistant", "user", "assistant"]


def test_sessions_list_read_paginate_delete(alice):
    ids = [new_session(alice, title=f"topic {i}") for i in range(3)]
    page = alice.get("/v2/chat", params={"limit": 2}).json()
    assert [s["id"] for s in page["data"]] == ids[::-1][:2] and page["has_more"]
    rest = alice.get("/v2/chat", params={"limit": 2, "before": page["next_before"]}).json()
    assert ids[0] in [s["id"] for s in rest["data"]]

    session = ids[0]
    for i in range(3):
        send(alice, session, f"Say the number {i}.", max_tokens=5)
    newest = alice.get(f"/v2/chat/{session}", params={"limit": 2}).json()
    assert len(newest["messages"]) == 2 and newest["has_more"]
    older = alice.get(f"/v2/chat/{session}", params={"limit": 10, "before": newest["next_before"]}).json()
    assert len(older["messages"]) == 4 and not older["has_more"]
    everything = older["messages"] + newest["messages"]
    assert [m["role"] for m in everything] == ["user", "assistant"] * 3  # chronological across pages

    assert alice.delete(f"/v2/chat/{session}").status_code == 204
    assert alice.get(f"/v2/chat/{session}").status_code == 404


def test_another_users_session_is_a_404(alice, bob):
    session = new_session(alice, title="private")
    send(alice, session, "Hello!", max_tokens=5)
    for response in (
        bob.get(f"/v2/chat/{session}"),
        bob.post(f"/v2/chat/{session}/messages", json={"content": "let me in"}),
        bob.delete(f"/v2/chat/{session}"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert session not in [s["id"] for s in bob.get("/v2/chat").json()["data"]]
    assert bob.get(f"/v2/chat/{uuid.uuid4()}").status_code == 404
    assert bob.get("/v2/chat/not-a-uuid").status_code == 404
    assert len(alice.get(f"/v2/chat/{session}").json()["messages"]) == 2  # nothing added by bob's attempt


def llm_generation(client: httpx.Client) -> dict:
    llm = next(m for m in client.get("/v1/models").json()["data"] if m["role"] == "llm")
    return llm["status"]["deployments"]["primary"]["generation"]


def test_disconnect_mid_stream_stores_an_interrupted_answer_and_stops_generation(alice, client):
    session = new_session(alice)
    before = llm_generation(client)
    body = {"content": "Write a very long story about a dragon who learns mathematics at school.",
            "temperature": 0.8, "max_tokens": 400}
    received = []
    with alice.stream("POST", f"/v2/chat/{session}/messages", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                received.append(json.loads(line.split(":", 1)[1])["delta"])
            if len(received) == 5:
                break  # leaving the block closes the connection mid-answer

    deadline = time.monotonic() + 30
    while True:
        messages = alice.get(f"/v2/chat/{session}").json()["messages"]
        if len(messages) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    user, assistant = messages
    assert user["status"] == "completed"
    assert assistant["status"] == "interrupted"
    assert assistant["content"].startswith("".join(received))

    # the replica hears of the disconnect a moment after the ingress
    after = wait_for(lambda: (g := llm_generation(client))["streams_active"] == 0 and g, 10, "the stream to stop")
    assert after["streams_cancelled"] == before["streams_cancelled"] + 1
    assert after["last_cancelled_after_tokens"] < 400  # stopped well before max_tokens
    assert after["streams_active"] == 0


def test_bad_messages(alice):
    session = new_session(alice)
    assert alice.post(f"/v2/chat/{session}/messages", json={"content": "   "}).status_code == 422
    assert alice.post(f"/v2/chat/{session}/messages", json={"content": "x", "extra": 1}).status_code == 422
    too_long = alice.post(f"/v2/chat/{session}/messages", json={"content": "cat " * 9000, "max_tokens": 64})
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    # the user's message was stored before generation was attempted: nothing the user typed is lost
    messages = alice.get(f"/v2/chat/{session}").json()["messages"]
    assert [m["role"] for m in messages] == ["user"]
