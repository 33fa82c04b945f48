"""The gpu profile on a three-node Ray, deployed the way operators do, with stores the app did not start.

Nodes (all on this host): a head with no CPUs for replicas (Ray's advice for a cluster head: it keeps the GCS,
the dashboard and the Serve controller), a CPU worker labelled `eduserve.io/node-pool: cpu` and a worker with a
logical GPU labelled `gpu`. PostgreSQL + pgvector and Redis run as separate TCP servers with passwords; every node
gets their URLs from its environment, as cluster.yaml and the RayService give them. The app goes up with
`serve deploy` against the dashboard. Each worker's proxy listens on a port of its own (they share this host), and
a proxy routes to the ingress replica on its own node, so one client can talk to each ingress replica.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serve_app.serve_env import without_serve_env
from tests.gpu import gpu_profile_models, replica_nodes
from tests.support.accounts import PASSWORD
from tests.support.servers import PostgresServer, RedisServer, free_port
from tests.support.sse import sse_events
from tests.support.wait import wait_for

pytestmark = pytest.mark.cluster

CPU_POOL = {"eduserve.io/node-pool": "cpu"}
GPU_POOL = {"eduserve.io/node-pool": "gpu"}
APP = "eduserve"


@dataclass
class Deployed:
    """The running cluster: its nodes, the proxy port on each, and the shared stores."""

    cluster: Any
    dashboard: str
    head_port: int
    nodes: dict[str, Any]  # "cpu" / "gpu" → the Ray node handle
    proxy_ports: dict[str, int] = field(default_factory=dict)  # node id → the port its proxy listens on
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None

    def url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.proxy_ports[node_id]}"

    def add_worker(self, name: str, **node_args: Any) -> Any:
        """A worker node whose proxy gets a port of its own (RAY_SERVE_WORKER_PROXY_HTTP_PORT, read at its start)."""
        port = free_port()
        with _env(RAY_SERVE_WORKER_PROXY_HTTP_PORT=str(port)):
            node = self.cluster.add_node(**node_args)
        self.cluster.wait_for_nodes()
        self.nodes[name] = node
        self.proxy_ports[node.node_id] = port
        return node


@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serve_config(head_port: int, tiny_models: dict[str, Path]) -> dict[str, Any]:
    """serve_gpu.yaml's application, with the models this host can load in place of the hub's."""
    gpu = {"autoscaling": None, "num_replicas": 1, "num_cpus": 0.5}
    cpu = {"autoscaling": None, "num_replicas": 1, "num_cpus": 1, "torch_threads": 1}
    overrides = {
        "offline": True,
        "storage": {"embedding_dimensions": 32},  # the tiny encoder's
        "ingress": {"num_cpus": 1},  # two replicas, at most one per node: the gpu profile's
        "models": gpu_profile_models(tiny_models, gpu, cpu),
    }
    config = yaml.safe_load((Path(__file__).parents[2] / "configs" / "serve_gpu.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=head_port)
    config["applications"][0]["args"]["overrides"] = overrides
    return config


def serve_cli(*args: str, dashboard: str) -> subprocess.CompletedProcess:
    serve = str(Path(sys.executable).with_name("serve"))
    return subprocess.run([serve, *args, "-a", dashboard], capture_output=True, text=True, timeout=120)


def app_status(dashboard: str) -> dict[str, Any]:
    response = httpx.get(f"{dashboard}/api/serve/applications/", headers=_dashboard_auth(), timeout=10)
    response.raise_for_status()
    return (response.json().get("applications") or {}).get(APP) or {}


def _dashboard_auth() -> dict[str, str]:
    token = Path.home() / ".ray" / "auth_token"
    return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}


def wait_running(dashboard: str, timeout_s: float = 420) -> dict[str, Any]:
    def running():
        status = app_status(dashboard)
        assert status.get("status") != "DEPLOY_FAILED", status
        return status if status.get("status") == "RUNNING" else None

    return wait_for(running, timeout_s, "the application RUNNING", every_s=2)


@pytest.fixture(scope="module")
def shared_stores() -> Iterator[tuple[PostgresServer, RedisServer]]:
    root = Path(tempfile.mkdtemp(prefix="eduserve-shared-stores-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user when the tests run as root
    postgres, redis = PostgresServer(root / "postgres"), RedisServer(root / "redis")
    try:
        yield postgres.start(), redis.start()
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(ray_serve, shared_stores, tiny_models) -> Iterator[Deployed]:
    import ray
    from ray.cluster_utils import Cluster

    postgres, redis = shared_stores
    ray_serve.shutdown()  # the session's one-node Ray gives way to this cluster
    without_serve_env(os.environ)  # several nodes on one host would share HAProxy's ports: Serve's proxies here
    dashboard_port, head_port = free_port(), free_port()
    # What cluster.yaml's ~/.eduserve/stores.env and the RayService's Secrets give every node.
    with _env(DATABASE_URL=postgres.url, REDIS_URL=redis.url, EDUSERVE_AUTH__JWT_SECRET=secrets.token_urlsafe(32)):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "include_dashboard": True, "dashboard_port": dashboard_port,
        })
        state = Deployed(cluster, f"http://127.0.0.1:{dashboard_port}", head_port, {"head": cluster.head_node},
                         postgres=postgres, redis=redis)
        state.proxy_ports[cluster.head_node.node_id] = head_port
        state.add_worker("cpu", num_cpus=4, labels=CPU_POOL)
        state.add_worker("gpu", num_cpus=4, num_gpus=1, labels=GPU_POOL)
        ray.init(address=cluster.address, logging_level="WARNING")
        try:
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as config:
                yaml.safe_dump(serve_config(head_port, tiny_models), config)
                config.flush()
                wait_for(lambda: httpx.get(state.dashboard, timeout=5).status_code < 500, 60, "the dashboard")
                done = serve_cli("deploy", config.name, dashboard=state.dashboard)
                assert done.returncode == 0, done.stderr
            wait_running(state.dashboard)
            yield state
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_each_deployment_runs_where_its_resources_and_labels_say(deployed):
    cpu, gpu = deployed.nodes["cpu"].node_id, deployed.nodes["gpu"].node_id
    placement = replica_nodes()
    assert placement["Ingress"] == {cpu, gpu}  # one per node, none on the CPU-less head
    assert placement["EmbedderGPU"] == {gpu} and placement["RerankerGPU"] == {gpu}
    assert placement["EmbedderCPU"] == {cpu} and placement["RerankerCPU"] == {cpu}  # off the GPU pool
    for deployment, nodes in placement.items():
        assert deployed.nodes["head"].node_id not in nodes, deployment


def _ingress_log_lines(request_id: str) -> dict[str, str]:
    """Ingress replica id → its log line for this request id, from the replica log files of this Ray session."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    found = {}
    for path in logs.glob(f"replica_{APP}_Ingress_*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if request_id in line:
                found[path.stem.rsplit("_", 1)[-1]] = line
    return found


def served_by(request_id: str) -> str:
    """The node of the ingress replica that handled this request (Serve writes the request id in its access log)."""
    from ray.util.state import list_actors

    replicas = wait_for(lambda: _ingress_log_lines(request_id), 30, f"request {request_id} in an ingress log")
    (replica_id,) = replicas
    actors = list_actors(filters=[("name", "=", f"SERVE_REPLICA::{APP}#Ingress#{replica_id}")])
    return actors[0].node_id


def _user_in(postgres: PostgresServer, email: str) -> bool:
    import asyncio

    import asyncpg

    async def lookup() -> bool:
        connection = await asyncpg.connect(postgres.url)
        try:
            return await connection.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 1
        finally:
            await connection.close()

    return asyncio.run(lookup())


def call(base: str, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, str]:
    request_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id, **kwargs.pop("headers", {})}
    return httpx.request(method, base + path, headers=headers, timeout=120, **kwargs), request_id


def test_two_ingress_replicas_on_two_nodes_share_logins_limits_revocations_and_chats(deployed):
    a, b = deployed.nodes["cpu"].node_id, deployed.nodes["gpu"].node_id
    email = f"student-{uuid.uuid4().hex[:8]}@school.test"
    response, request_id = call(deployed.url(a), "POST", "/v2/auth/register",
                                json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    assert served_by(request_id) == a  # the premise: each node's proxy reaches that node's ingress replica
    assert _user_in(deployed.postgres, email)  # the app wrote to the server it was given, not one of its own
    login, _ = call(deployed.url(a), "POST", "/v2/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

    # A sign-in on one replica works on the other.
    me, request_id = call(deployed.url(b), "GET", "/v2/auth/me", headers=auth)
    assert me.status_code == 200 and me.json()["email"] == email and served_by(request_id) == b

    # A chat written through one is read through the other.
    created, _ = call(deployed.url(a), "POST", "/v2/chat", headers=auth, json={})
    session = created.json()["id"]
    with httpx.stream("POST", f"{deployed.url(a)}/v2/chat/{session}/messages", headers=auth, timeout=120,
                      json={"content": "Name a planet.", "max_tokens": 8, "temperature": 0}) as stream:
        assert stream.status_code == 200
        done = [data for name, data in sse_events(stream) if name == "done"]
    assert len(done) == 1, "the turn did not complete"
    detail, _ = call(deployed.url(b), "GET", f"/v2/chat/{session}", headers=auth)
    assert [m["id"] for m in detail.json()["messages"]] == [done[0]["user_message_id"], done[0]["message_id"]]

    # Login attempts per account are counted once for the cluster (10 a minute), not per replica.
    other = f"target-{uuid.uuid4().hex[:8]}@school.test"
    call(deployed.url(a), "POST", "/v2/auth/register", json={"email": other, "password": PASSWORD})
    statuses = [call(deployed.url(node), "POST", "/v2/auth/login",
                     json={"email": other, "password": "wrong-Password-1"})[0].status_code
                for node in [a, b] * 5]
    assert statuses == [401] * 10
    refused, _ = call(deployed.url(b), "POST", "/v2/auth/login", json={"email": other, "password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0, refused.text

    # A logout on one replica revokes the token on the other.
    logout, _ = call(deployed.url(b), "POST", "/v2/auth/logout", headers=auth)
    assert logout.status_code == 204
    after, _ = call(deployed.url(a), "GET", "/v2/auth/me", headers=auth)
    assert after.status_code == 401 and after.json()["error"]["code"]


def test_usage_counted_by_two_ingress_replicas_adds_up(deployed):
    """Each replica buffers its own counts and adds them to the same per-minute rows: a report through either
    replica shows the sum of what both answered."""
    a, b = deployed.nodes["cpu"].node_id, deployed.nodes["gpu"].node_id
    auth = {"Authorization": f"Bearer {_admin_key(deployed)}"}
    reported, served = 0, set()
    for index, node in enumerate([a, b] * 4):
        response, request_id = call(deployed.url(node), "POST", "/v1/embeddings", headers=auth,
                                    json={"input": ["usage adds up", f"on two replicas, call {index}"]})
        assert response.status_code == 200, response.text
        reported += response.json()["usage"]["prompt_tokens"]
        if index < 2:
            served.add(served_by(request_id))
    assert served == {a, b}

    def totals(node: str) -> dict[str, Any]:
        response, _ = call(deployed.url(node), "GET", "/v2/usage", headers=auth, params={"period": "total"})
        assert response.status_code == 200, response.text
        return response.json()["totals"]

    wait_for(lambda: totals(a)["requests"] == 8, 30, "both replicas' usage in PostgreSQL")
    for node in (a, b):
        assert totals(node)["prompt_tokens"] == reported and totals(node)["requests"] == 8


class Load:
    """Closed-loop clients through one proxy: embeddings and chat turns, every answer recorded."""

    def __init__(self, base: str, api_key: str, student: dict[str, str], sessions: list[str]):
        self.base, self.api_key, self.student, self.sessions = base, api_key, student, sessions
        self.statuses: Counter = Counter()
        self.bad: list[str] = []
        self.acknowledged: dict[str, list[str]] = defaultdict(list)  # session → message ids the client was given
        self.stop = threading.Event()

    def _record(self, response: httpx.Response, body: str) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code == 503:
            if "retry-after" not in response.headers or '"error"' not in body:
                self.bad.append(f"503 without Retry-After or error shape: {body[:200]}")
        elif response.status_code != 200:
            self.bad.append(f"{response.status_code}: {body[:300]}")

    def embed(self) -> None:
        with httpx.Client(base_url=self.base, timeout=120, headers={"Authorization": f"Bearer {self.api_key}"}) as http:
            while not self.stop.is_set():
                try:
                    response = http.post("/v1/embeddings", json={"input": ["under load", "a node goes"]})
                    self._record(response, response.text)
                except httpx.HTTPError as exc:
                    self.bad.append(f"embeddings: {exc!r}")

    def chat(self, session: str) -> None:
        turn = 0
        with httpx.Client(base_url=self.base, timeout=120, headers=self.student) as http:
            while not self.stop.is_set():
                turn += 1
                body = {"content": f"What is {turn} plus {turn % 7}?", "max_tokens": 6, "temperature": 0}
                try:
                    with http.stream("POST", f"/v2/chat/{session}/messages", json=body) as response:
                        if response.status_code != 200:
                            self._record(response, response.read().decode())
                            continue
                        events = sse_events(response)
                except httpx.HTTPError as exc:
                    self.bad.append(f"chat: {exc!r}")
                    continue
                done = [data for name, data in events if name == "done"]
                errors = [data for name, data in events if name == "error"]
                if done:
                    self.statuses[200] += 1
                    self.acknowledged[session] += [done[0]["user_message_id"], done[0]["message_id"]]
                elif errors and errors[0]["error"].get("code") in {"model_unavailable", "dependency_unavailable"}:
                    self.statuses["stream-503"] += 1  # the documented in-stream form of a 503
                else:
                    self.bad.append(f"stream ended without done: {events[-3:]}")

    @contextmanager
    def running(self) -> Iterator[Load]:
        threads = [threading.Thread(target=self.embed) for _ in range(2)]
        threads += [threading.Thread(target=self.chat, args=(session,)) for session in self.sessions]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=180)


def _admin_key(deployed: Deployed) -> str:
    import asyncio

    from serve_app.bootstrap import create_api_key, create_user
    from serve_app.settings import load_settings

    settings = load_settings("gpu", {"storage": {"embedding_dimensions": 32}})  # the store URLs: from the env
    assert settings.database_url.get_secret_value() == deployed.postgres.url
    email = f"ops-{uuid.uuid4().hex[:6]}@school.test"
    asyncio.run(create_user(settings, email, "correct-Horse-battery-9", "admin"))
    return asyncio.run(create_api_key(settings, email, "load", "admin"))["key"]


def _all_message_ids(base: str, session: str, auth: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 200}
    while True:
        page = httpx.get(f"{base}/v2/chat/{session}", params=params, headers=auth, timeout=60)
        assert page.status_code == 200, page.text
        ids |= {message["id"] for message in page.json()["messages"]}
        if not page.json()["has_more"]:
            return ids
        params["before"] = page.json()["next_before"]


def test_a_worker_node_removed_under_load(deployed):
    """The CPU worker goes (its ingress replica, the CPU fallbacks, whatever else ran there) while clients talk to
    the GPU worker's proxy: answers are 200 or a documented 503, every acknowledged chat message is kept, Serve
    moves what fits onto the GPU worker, and a replacement node brings the rest back."""
    gpu = deployed.nodes["gpu"].node_id
    base = deployed.url(gpu)
    email = f"load-{uuid.uuid4().hex[:8]}@school.test"
    assert httpx.post(f"{base}/v2/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    token = httpx.post(f"{base}/v2/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
    student = {"Authorization": f"Bearer {token}"}
    sessions = [httpx.post(f"{base}/v2/chat", headers=student, json={}).json()["id"] for _ in range(2)]
    load = Load(base, _admin_key(deployed), student, sessions)

    with load.running():
        time.sleep(10)
        deployed.cluster.remove_node(deployed.nodes.pop("cpu"))
        # What fits moves to the GPU worker: here the LLM, speech and safety run on CPU (with their gpu-profile
        # names) and no label keeps them off it.
        wait_for(lambda: all(replica_nodes()[name] == {gpu} for name in ("LLMGPU", "TTSGPU", "SafetyGPU")),
                 180, "the CPU-run model replicas on the remaining worker", every_s=2)
        served_before = load.statuses[200]
        time.sleep(15)
        assert load.statuses[200] > served_before, "nothing succeeded after the node was gone"

    assert not load.bad, (dict(load.statuses), load.bad[:5])
    assert load.statuses[200] > 0, load.statuses
    for session, acknowledged in load.acknowledged.items():
        kept = _all_message_ids(base, session, student)
        assert set(acknowledged) <= kept, f"lost {len(set(acknowledged) - kept)} acknowledged messages"

    # A replacement CPU node (what an autoscaler would start) gets the replicas that had nowhere to go.
    replacement = deployed.add_worker("cpu", num_cpus=4, labels=CPU_POOL)
    wait_running(deployed.dashboard, timeout_s=300)
    placement = replica_nodes()
    assert placement["Ingress"] == {gpu, replacement.node_id}
    assert placement["EmbedderCPU"] == {replacement.node_id}
    response = httpx.get(f"{deployed.url(replacement.node_id)}/readyz", timeout=60)
    assert response.status_code == 200, response.text
