"""Where a NUL character sits in a request body, named without echoing the caller's own text."""

from __future__ import annotations

from serve_app.protocol.common import nul_location


def test_field_names_and_indexes_are_named():
    assert nul_location({"messages": [{"role": "user", "content": "a\x00b"}]}) == "messages.0.content"
    assert nul_location("x\x00") == ""
    assert nul_location({"fine": ["text", 1, None]}) is None


def test_a_key_of_the_callers_own_text_is_masked_not_echoed():
    body = {"metadata": {"sécret\x01 key": {"inner": "\x00"}}}
    assert nul_location(body) == "metadata.*.inner"
    assert nul_location({"tools": {"na\x00me": 1}}) == "tools.*"


def test_a_deeply_nested_body_does_not_exhaust_the_stack():
    body: object = "\x00"
    for _ in range(50_000):
        body = [body]
    assert nul_location(body) == ".".join(["0"] * 50_000)
