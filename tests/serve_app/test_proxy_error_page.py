"""HAProxy's page for requests no ingress replica answered: a complete HTTP response in the one error shape."""

from __future__ import annotations

import json

from serve_app.proxy_error_page import error_page


def test_the_page_is_a_503_with_retry_after_and_an_exact_length_in_the_error_shape():
    head, body = error_page().split(b"\r\n\r\n", 1)
    status, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert int(headers["content-length"]) == len(body)
    assert int(headers["retry-after"]) > 0
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "server_error" and error["message"]

