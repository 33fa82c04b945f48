"""Usage accounting and token budgets through the real app: what `/v2/usage` and `/v2/admin/usage` report
matches the `usage` the responses reported (embeddings, rerank, chat whole / streamed / interrupted, a /v2 chat
turn, speech), per user and API key; a key's daily budget and a course's budget refuse with a 429 naming it."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import wave

import httpx
import pytest

from tests.support.accounts import PASSWORD, login_client, new_student
from tests.support.sse import sse_events
from tests.support.wait import wait_for

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name three colours."}]


def _api_client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=120, headers={"Authorization": f"Bearer {key}"})


def _key_for(client: httpx.Client, email: str, **extra) -> dict:
    created = client.post("/v2/admin/api-keys", json={"name": "usage", "role": "student", "user_email": email,
                                                       **extra})
    assert created.status_code == 201, created.text
    return created.json()


def _stream_usage(http: httpx.Client, body: dict) -> dict:
    """A streamed chat completion read to the end; the usage chunk's counts."""
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True,
                                                          "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert all("usage" not in c for c in chunks[:-1])  # per-chunk usage only when asked (continuous_usage_stats)
    return chunks[-1]["usage"]


def _interrupted(http: httpx.Client) -> int:
    """A stream the client leaves after a few chunks; the completion tokens it had seen (continuous usage)."""
    body = {"messages": QUESTION, "max_tokens": 400, "min_tokens": 400, "temperature": 1.0, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    seen = 0
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: {"))
        for _ in range(6):
            chunk = json.loads(next(lines)[6:])
            seen = chunk["usage"]["completion_tokens"]
            assert chunk["usage"]["total_tokens"] == chunk["usage"]["prompt_tokens"] + seen
    return seen


def _report(http: httpx.Client, path: str, **params) -> dict:
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_usage_matches_what_the_responses_reported_per_user_and_key(cpu_app, client):
    student = new_student(cpu_app, "usage")
    key = _key_for(client, student.email)
    expected = {"prompt_tokens": 0, "completion_tokens": 0, "documents": 0, "requests": 0}
    by_key = {"prompt_tokens": 0, "completion_tokens": 0}

    def add(counts: dict, usage: dict, via_key: bool = False) -> None:
        for name in ("prompt_tokens", "completion_tokens"):
            expected[name] += usage.get(name, 0)
            if via_key:
                by_key[name] += usage.get(name, 0)
        expected["requests"] += counts.get("requests", 1)
        expected["documents"] += counts.get("documents", 0)

    with _api_client(cpu_app, key["key"]) as service:
        embedded = student.post("/v1/embeddings", json={"input": ["a fraction", "a decimal number"]})
        add({}, embedded.json()["usage"])
        documents = ["Paris is in France.", "Bananas are yellow.", "The Seine flows through Paris."]
        reranked = student.post("/v1/rerank", json={"query": "Where is Paris?", "documents": documents})
        add({"documents": 3}, {"prompt_tokens": reranked.json()["usage"]["total_tokens"]})
        whole = student.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 12})
        add({}, whole.json()["usage"])
        add({}, _stream_usage(student, {"messages": QUESTION, "max_tokens": 12}))
        session = student.post("/v2/chat", json={}).json()["id"]
        with student.stream("POST", f"/v2/chat/{session}/messages",
                            json={"content": "What is 2 + 2?", "max_tokens": 10}) as turn:
            done = [data for name, data in sse_events(turn) if name == "done"]
        add({}, done[0]["usage"])
        speech = student.post("/v1/audio/speech", json={"input": "Two plus two is four.", "response_format": "wav"})
        with wave.open(io.BytesIO(speech.content)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        add({}, {})
        # Through the student's API key
        add({}, service.post("/v1/embeddings", json={"input": "ratio"}).json()["usage"], via_key=True)
        add({}, _stream_usage(service, {"messages": QUESTION, "max_tokens": 8}), via_key=True)
        seen = _interrupted(student)

        def totals() -> dict:
            return _report(student, "/v2/usage", period="total")["totals"]

        # The interrupted stream is counted by the ingress when it notices the client left: as far as it got.
        wait_for(lambda: totals()["requests"] == expected["requests"] + 1, 30, "the interrupted stream counted")
        counted = totals()
        interrupted = counted["completion_tokens"] - expected["completion_tokens"]
        assert seen <= interrupted < 400, (seen, interrupted)
        assert counted["prompt_tokens"] > expected["prompt_tokens"]  # + the interrupted one's prompt
        assert counted["documents"] == expected["documents"] == 3
        assert counted["audio_seconds"] == pytest.approx(seconds, abs=0.01)

        mine = _report(student, "/v2/usage")  # by day, model and kind
        kinds = {row["kind"] for row in mine["data"]}
        assert kinds == {"embedding", "rerank", "chat", "speech"}
        assert sum(row["total_tokens"] for row in mine["data"]) == counted["total_tokens"]

    by = _report(client, "/v2/admin/usage", group_by="api_key", user_id=key["user_id"], period="total")["data"]
    through_key = next(row for row in by if row["api_key"] == key["id"])
    assert (through_key["prompt_tokens"], through_key["completion_tokens"]) == (by_key["prompt_tokens"],
                                                                              by_key["completion_tokens"])
    signed_in = next(row for row in by if row["api_key"] is None)
    assert signed_in["requests"] == expected["requests"] - 2 + 1
    users = _report(client, "/v2/admin/usage", group_by=["user", "role"], user_id=key["user_id"])["data"]
    assert {(row["email"], row["role"]) for row in users} == {(student.email, "student")}
    # Another user's report does not see it; the admin report refuses non-admins.
    assert _report(new_student(cpu_app), "/v2/usage")["totals"]["requests"] == 0
    assert student.get("/v2/admin/usage").status_code in (401, 403)


def test_a_key_with_a_200_token_daily_budget(cpu_app, client):
    student = new_student(cpu_app, "budget")
    key = _key_for(client, student.email, budget={"tokens_per_day": 200})
    assert key["budget"]["tokens_per_day"] == 200
    with _api_client(cpu_app, key["key"]) as service:
        used, statuses = 0, []
        while used < 200:
            answer = service.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 48})
            assert answer.status_code == 200, answer.text  # the request that crosses the budget completes
            used += answer.json()["usage"]["total_tokens"]
            statuses.append(answer.status_code)
        for refused in (service.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 4}),
                        service.post("/v1/embeddings", json={"input": "one more"})):
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
            assert "this API key's daily token budget (200 tokens)" in error["message"]
            assert 0 < int(refused.headers["Retry-After"]) <= 86_400
        assert service.get("/v2/usage").status_code == 200  # reading one's usage is not a model call
    # The user's own sign-in is not limited by the key's budget.
    assert student.post("/v1/embeddings", json={"input": "still fine"}).status_code == 200
    # Lifting the budget applies at once on this replica.
    assert client.delete(f"/v2/admin/api-keys/{key['id']}/budget").status_code == 204
    with _api_client(cpu_app, key["key"]) as service:
        assert service.post("/v1/embeddings", json={"input": "again"}).status_code == 200


def test_a_teachers_course_budget_applies_to_enrolled_students_only(cpu_app, client, stores):
    from serve_app.bootstrap import create_user

    email = f"teacher-{uuid.uuid4().hex[:8]}@school.test"
    asyncio.run(create_user(stores.settings(), email, PASSWORD, "teacher"))
    teacher, enrolled, outsider = login_client(cpu_app, email), new_student(cpu_app), new_student(cpu_app)
    course = f"budgeted-{uuid.uuid4().hex[:8]}"
    assert teacher.post("/v2/collections", json={"name": course}).status_code == 201
    assert teacher.post(f"/v2/collections/{course}/members", json={"email": enrolled.email}).status_code == 204
    budget = teacher.put(f"/v2/collections/{course}/budget", json={"tokens_per_minute": 5})
    assert budget.status_code == 200 and budget.json()["tokens_per_minute"] == 5
    assert enrolled.put(f"/v2/collections/{course}/budget", json={"tokens_per_day": 10**6}).status_code == 403
    used = {}
    for name, user in (("enrolled", enrolled), ("outsider", outsider), ("teacher", teacher)):  # > 5 tokens each
        answer = user.post("/v1/embeddings", json={"input": "a sentence of more than five tokens"})
        assert answer.status_code == 200
        used[name] = answer.json()["usage"]["total_tokens"]
    refused = enrolled.post("/v1/embeddings", json={"input": "more"})
    assert refused.status_code == 429 and f"course {course!r} per-minute token budget" in refused.json()["error"]["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    for user in (outsider, teacher):
        assert user.post("/v1/embeddings", json={"input": "more"}).status_code == 200
    by_course = _report(client, "/v2/admin/usage", group_by="collection", collection=course, period="total")["data"]
    # The course's members (the enrolled student; the teacher owns it without being enrolled): the refused
    # request never reached a model, so it is not counted.
    assert [(row["collection"], row["requests"], row["total_tokens"]) for row in by_course] == [
        (course, 1, used["enrolled"])]


@pytest.mark.parametrize("params", [{"start": "2026-02-01", "end": "2026-01-01"}, {"group_by": "nonsense"},
                                    {"period": "week"}, {"start": "2020-01-01", "end": "2026-01-01"}, {"end": "9999-12-31"},
                                    {"user_id": "not-a-uuid"}])
def test_bad_report_parameters_are_4xx(client, params):
    response = client.get("/v2/admin/usage", params=params)
    assert response.status_code == 422 and response.json()["error"]["code"], response.text


def test_budget_routes_refuse_bad_input(client):
    missing = client.put(f"/v2/admin/users/{uuid.uuid4()}/budget", json={"tokens_per_day": 10})
    assert missing.status_code == 404
    for body in ({"tokens_per_day": 0}, {"tokens_per_day": "lots"}, {"per_day": 5}):
        response = client.put(f"/v2/admin/users/{uuid.uuid4()}/budget", json=body)
        assert response.status_code == 422, response.text
    assert client.get(f"/v2/admin/api-keys/{uuid.uuid4()}/budget").status_code == 404
