"""Where a request body holds text that is not valid text (a NUL character, an unpaired surrogate), named without
echoing the caller's own text."""

from __future__ import annotations

from serve_app.protocol.common import NUL, SURROGATE, invalid_text_location


def test_field_names_and_indexes_are_named():
    assert invalid_text_location({"messages": [{"role": "user", "content": "a\x00b"}]}) == ("messages.0.content", NUL)
    assert invalid_text_location("x\x00") == ("", NUL)
    assert invalid_text_location({"fine": ["text", "ünïcödé ✓ 😀", 1, None]}) is None


def test_an_unpaired_surrogate_is_found_as_a_nul_is():
    assert invalid_text_location({"input": ["ok", "a\ud800b"]}) == ("input.1", SURROGATE)
    assert invalid_text_location({"query": "\udfff"}) == ("query", SURROGATE)
    assert invalid_text_location({"metadata": {"k\ud83d": 1}}) == ("metadata.*", SURROGATE)
    assert invalid_text_location({"ok": "\U0001f600"}) is None  # a real astral character, not a surrogate


def test_a_key_of_the_callers_own_text_is_masked_not_echoed():
    body = {"metadata": {"sécret\x01 key": {"inner": "\x00"}}}
    assert invalid_text_location(body) == ("metadata.*.inner", NUL)
    assert invalid_text_location({"tools": {"na\x00me": 1}}) == ("tools.*", NUL)


def test_a_deeply_nested_body_does_not_exhaust_the_stack():
    body: object = "\x00"
    for _ in range(50_000):
        body = [body]
    assert invalid_text_location(body) == (".".join(["0"] * 50_000), NUL)


def test_a_request_model_refusing_invalid_text_names_the_field_for_the_error_shape():
    """The whole-body check has no location of its own: the field travels in the error's context, and the one
    validation handler makes it the message's subject and OpenAI's `param`."""
    import pytest
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    from serve_app.errors import _describe_validation
    from serve_app.protocol.common import RequestModel

    with pytest.raises(ValidationError) as caught:
        RequestModel.model_validate({"messages": [{"content": "hi \ud800"}]})
    errors = [{**error, "loc": ("body", *error["loc"])} for error in caught.value.errors()]
    message, param = _describe_validation(RequestValidationError(errors))
    assert message == f"messages.0.content: text must not contain {SURROGATE}"
    assert param == "messages.0.content"
