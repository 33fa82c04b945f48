"""Odd input that once answered 500 (or a model's 422): NUL characters anywhere a text reaches PostgreSQL, unpaired
surrogates, and numbers past what the database holds. Each is a 4xx in the one error shape, and the service stays
healthy after it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.accounts import new_student

NUL = "a\u0000b"


@pytest.fixture(scope="module")
def student(cpu_app_module) -> httpx.Client:
    http = new_student(cpu_app_module, "odd")
    yield http
    http.close()


def assert_refused(response: httpx.Response, statuses: tuple[int, ...] = (400, 422)) -> None:
    assert response.status_code in statuses, response.text
    error = response.json()["error"]
    assert error["code"] in ("bad_request", "validation_error") and error["message"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v2/chat", {"title": NUL}),
    ("put", "/v2/profiles/me", {"interests": ["maths", NUL]}),
    ("put", "/v2/profiles/me", {"voice": NUL}),
    ("post", "/v2/profiles/me/progress", {"kind": "lesson_completed", "topic": NUL}),
    ("post", "/v2/rag/search", {"query": NUL}),
    ("post", "/v2/documents", {"collection": "private", "documents": [{"title": "t", "text": NUL}]}),
    ("post", "/v2/documents", {"collection": "private", "documents": [{"title": "t", "text": "x",
                                                                         "metadata": {NUL: 1}}]}),
    ("post", "/v2/collections", {"name": NUL}),
    ("post", "/v2/content/simplify", {"text": NUL}),
    ("post", "/v2/auth/login", {"email": "a@b.test", "password": NUL}),
    ("post", "/v1/embeddings", {"input": [NUL], "model": "all-minilm-l6-v2"}),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": NUL}]}),
])
def test_a_nul_character_in_any_body_text_is_refused_by_name(student, method, path, body):
    response = getattr(student, method)(path, json=body)
    assert_refused(response)
    assert "NUL" in response.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/v1/embeddings", {"input": "a\ud800b"}),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi \udfff"}], "max_tokens": 2}),
    ("post", "/v1/completions", {"prompt": "\ud83d", "max_tokens": 2}),
    ("post", "/v1/rerank", {"query": "q", "documents": ["ok", "\ud800"]}),
    ("post", "/v1/moderations", {"input": "x\ud800"}),
    ("post", "/v1/audio/speech", {"input": "hello \ud800", "voice": "heart"}),
    ("post", "/v2/chat", {"title": "\ud800"}),
    ("post", "/v2/rag/search", {"query": "\udc00"}),
    ("put", "/v2/profiles/me", {"interests": ["maths", "\ud800"]}),
])
def test_an_unpaired_surrogate_in_any_body_text_is_refused_by_name(student, method, path, body):
    """JSON may carry a lone surrogate as an escape (`"\\ud800"`); it is no character, so the field is named in a
    400/422 before a tokenizer or the database meets it (they answered a model's 422 or a bare validation error)."""
    response = getattr(student, method)(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert_refused(response)
    error = response.json()["error"]
    assert "surrogate" in error["message"] and error["param"] and error["param"] != "body"  # the field is named


def test_a_nul_in_a_chat_turn_is_refused_before_anything_is_stored(student):
    session = student.post("/v2/chat", json={"title": "odd"}).json()
    response = student.post(f"/v2/chat/{session['id']}/messages", json={"content": f"hello {NUL}"})
    assert_refused(response)
    assert student.get(f"/v2/chat/{session['id']}").json()["messages"] == []


@pytest.mark.parametrize("url", [
    "/v2/chat?before=a%00b",
    "/v2/documents?offset=1&collection=a%00b",
    "/v2/chat/a%00b",
])
def test_a_nul_in_the_url_is_refused(student, url):
    assert_refused(student.get(url))


@pytest.mark.parametrize("url", [
    "/v2/documents?offset=99999999999999999999",
    "/v2/documents?offset=9223372036854775808",
    "/v2/documents?offset=-1",
])
def test_numbers_past_what_the_database_holds_are_a_4xx(student, url):
    assert_refused(student.get(url))
    assert student.get("/v2/profiles/me").status_code == 200  # and the database is not marked down


def test_an_uploaded_text_file_with_nul_bytes_is_refused(student):
    response = student.post("/v2/documents/upload", data={"collection": "private"},
                            files={"files": ("notes.txt", b"line one\x00line two", "text/plain")})
    assert response.status_code in (400, 415, 422), response.text
    assert "NUL" in response.json()["error"]["message"]


def test_a_nul_in_an_upload_form_field_is_refused(student):
    response = student.post("/v2/documents/upload", data={"collection": NUL},
                            files={"files": ("notes.txt", b"plain text", "text/plain")})
    assert response.status_code in (400, 403, 404, 422), response.text


# A long run of digits makes hibari's number reader raise IndexError (found by probing the packaged engine).
UNSPEAKABLE = "1234567890" * 5


def test_a_text_the_tts_engine_raises_on_is_a_422_and_fails_alone(student):
    from concurrent.futures import ThreadPoolExecutor

    def speech(text: str) -> httpx.Response:
        return student.post("/v1/audio/speech", json={"input": text, "response_format": "wav"})

    with ThreadPoolExecutor(4) as pool:  # sent together, so the sentences share the TTS replica's batches
        bad, good, *_ = pool.map(speech, [UNSPEAKABLE, "Good morning.", UNSPEAKABLE, "Good evening."])
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["code"] == "unprocessable_input"
    assert good.status_code == 200 and good.headers["content-type"].startswith("audio/")
    streamed = student.post("/v2/content/tts", json={"text": UNSPEAKABLE})
    assert streamed.status_code == 422 and streamed.json()["error"]["code"] == "unprocessable_input"
    assert student.get("/v1/models").status_code == 200  # and the TTS is still up (its breaker untouched)
