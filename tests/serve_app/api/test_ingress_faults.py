"""An ingress replica dying under a request: never HAProxy's or Serve's bare 500. The client gets the service's 503
with Retry-After in the one error shape, or, where HAProxy had reused its connection to that replica, its own
connection closed without an answer (HAProxy passes the replica's close on, the signal HTTP clients retry on); and
the replacement replica serves the next request."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import APP_NAME, LLM_MODEL
from tests.support.wait import wait_for

pytestmark = pytest.mark.disruptive


def _ingress_actor():
    import ray

    (name,) = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
               if actor["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#Ingress#")]
    return ray.get_actor(name, namespace="serve")


def test_an_ingress_replica_killed_mid_request_gives_the_503_or_a_closed_connection_never_a_500(client, anonymous):
    import ray

    answer: dict[str, httpx.Response | httpx.RemoteProtocolError] = {}

    def slow_request() -> None:
        try:
            answer["response"] = client.post("/v1/chat/completions", json={
                "model": LLM_MODEL, "max_tokens": 400, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]})
        except httpx.RemoteProtocolError as closed:  # "Server disconnected without sending a response"
            answer["response"] = closed

    from serve_app.proxy_error_page import error_page, haproxy_folder

    (page,) = haproxy_folder().glob(f"{ray.get_runtime_context().get_node_id()}/500.http")
    assert page.read_bytes() == error_page()  # the ingress replica put it over Ray's
    ingress = _ingress_actor()
    request = threading.Thread(target=slow_request)
    request.start()
    time.sleep(1.5)  # the completion is generating: the ingress holds the request
    assert "response" not in answer, "the request ended before the ingress was killed"
    ray.kill(ingress, no_restart=False)
    request.join(60)
    response = answer["response"]
    if isinstance(response, httpx.Response):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) > 0

    wait_for(lambda: answered(lambda: anonymous.get("/readyz")) == 200, 120, "a replacement ingress replica")
    assert wait_for(lambda: answered(lambda: client.post("/v1/embeddings", json={"input": "after"})), 10,
                    "an answer on a fresh connection") == 200


def answered(send) -> int | None:
    """The status of a request, or None where HAProxy closed the pooled keep-alive connection it went out on: a
    reload for the new replica closes the idle ones, and the client learns it only by sending (seen once in CI)."""
    try:
        return send().status_code
    except httpx.TransportError:
        return None


def test_the_error_page_comes_back_over_rays(client):
    """A restarted HAProxy manager writes Ray's page again: the ingress's health check puts eduserve's back."""
    import ray

    from serve_app.proxy_error_page import error_page, haproxy_folder

    assert client.get("/readyz").status_code == 200
    page = haproxy_folder() / ray.get_runtime_context().get_node_id() / "500.http"
    page.write_bytes(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")  # as Ray writes it
    wait_for(lambda: page.read_bytes() == error_page(), 40, "the ingress's health check to put its page back")
