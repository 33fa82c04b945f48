"""Storage failures on the running app: Redis killed (the service keeps answering), PostgreSQL stopped (503 with
Retry-After on what needs it, then recovery without restarting anything)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.wait import wait_for

pytestmark = pytest.mark.disruptive


def test_redis_killed_requests_still_succeed_signed_out_tokens_stay_out_and_the_app_recovers(client, anonymous, stores):
    email = f"redis-down-{time.time_ns()}@school.test"
    assert anonymous.post("/v2/auth/register", json={"email": email, "password": "Still-works-123"}).status_code == 201
    tokens = anonymous.post("/v2/auth/login", json={"email": email, "password": "Still-works-123"}).json()
    signed_out = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert anonymous.get("/v2/auth/me", headers=signed_out).status_code == 200
    assert anonymous.post("/v2/auth/logout", headers=signed_out,
                          json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    assert client.post("/v1/embeddings", json={"input": "before"}).status_code == 200

    os.kill(int((stores.data_dir / "redis" / "redis.pid").read_text()), signal.SIGKILL)  # no snapshot: wiped
    try:
        for i in range(5):
            assert client.post("/v1/embeddings", json={"input": f"during {i}"}).status_code == 200
        assert anonymous.get("/v2/auth/me", headers=signed_out).status_code == 401
        login = anonymous.post("/v2/auth/login", json={"email": email, "password": "Still-works-123"})
        assert login.status_code == 200  # rate limits fell back to per-replica counting
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"]["degraded"] is True
    finally:
        stores.redis.restart()  # what the supervisor of the embedded stores does: same address
    wait_for(lambda: anonymous.get("/readyz").json()["checks"]["redis"]["degraded"] is False, what="Redis back")
    assert anonymous.get("/v2/auth/me", headers=signed_out).status_code == 401  # the restarted cache is empty


def test_postgres_stopped_gives_503_with_retry_after_then_recovers(client, anonymous, stores):
    assert client.get("/v1/models").status_code == 200
    cache_ttl_s = stores.settings().auth.principal_cache_ttl_s
    stores.postgres.stop()
    stopped = time.monotonic()
    try:
        # The key was authenticated a moment ago: the ingress may still know it for auth.principal_cache_ttl_s;
        # after that it must be looked up again, and with the database down that fails closed.
        while (response := client.post("/v1/embeddings", json={"input": "needs the API key looked up"})).status_code == 200:
            assert time.monotonic() - stopped < cache_ttl_s + 1.5, "a cached caller outlived the cache's TTL"
            time.sleep(0.2)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert int(response.headers["retry-after"]) > 0
        login = anonymous.post("/v2/auth/login", json={"email": "x@school.test", "password": "whatever-1234"})
        assert login.status_code == 503
        ready = anonymous.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"]["ok"] is False
        assert anonymous.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        stores.postgres.start()
    wait_for(lambda: client.post("/v1/embeddings", json={"input": "after"}).status_code == 200,
             what="the app to reconnect to PostgreSQL")
    assert anonymous.get("/readyz").status_code == 200


def test_postgres_stopped_mid_turn_ends_the_stream_with_an_error_and_the_answer_is_stored_when_it_is_back(
        client, stores):
    session = client.post("/v2/chat", json={"title": "outage"}).json()
    events: list[tuple[str | None, dict]] = []
    name = None
    with client.stream("POST", f"/v2/chat/{session['id']}/messages", json={
            "content": "Explain in detail, step by step, how the water cycle works.", "max_tokens": 300,
            "temperature": 0}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if len(events) == 1:
                    stores.postgres.stop()  # the user's message is stored; the answer is on its way
    try:
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "error" and set(kinds[:-1]) == {"token"}  # never cut off without an end event
        assert events[-1][1]["error"]["code"] == "database_unavailable"
        shown = "".join(data["delta"] for kind, data in events if kind == "token")
    finally:
        stores.postgres.start()

    def stored() -> list[dict]:
        response = client.get(f"/v2/chat/{session['id']}")
        return response.json()["messages"] if response.status_code == 200 else []

    wait_for(lambda: len(stored()) == 2, what="the kept answer to be stored once PostgreSQL is back", timeout_s=60)
    user, answer = stored()
    assert user["role"] == "user" and answer["role"] == "assistant"
    assert answer["status"] == "completed" and answer["content"] == shown
