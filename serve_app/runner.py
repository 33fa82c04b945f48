"""`eduserve run`: a local Ray head node plus the Serve app from serve_config.yaml, stopped cleanly on Ctrl-C.

Ray 2.60 turns token authentication on for new local clusters. We keep it on (RAY_AUTH_MODE=token unless the
caller set RAY_AUTH_MODE), make sure a token exists in ~/.ray/auth_token, and tell the user how the dashboard
and `serve status` use it. Everything started here is stopped with `ray stop`, never by killing PIDs (that leaves
gcs_server and a stale /tmp/ray/ray_current_cluster behind).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from serve_app.serve_env import with_serve_env
from serve_app.settings import ConfigError, Settings, load_settings
from serve_app.storage.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedStoresRefused,
    StoreSupervisor,
    refuse_beyond_one_machine,
)

APP_IMPORT_PATH = "serve_app.app:build_app"
DASHBOARD = "http://127.0.0.1:8265"
TOKEN_PATH = Path.home() / ".ray" / "auth_token"


def _bin(name: str) -> str:
    """A console script next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


def _say(message: str) -> None:
    print(f"[eduserve] {message}", flush=True)


def load_serve_config(path: Path, profile: str | None) -> tuple[dict[str, Any], dict[str, Any], Settings]:
    """The Serve config (the eduserve app's profile replaced when `profile` is given), that app, its settings."""
    config = yaml.safe_load(path.read_text())
    apps = [app for app in config.get("applications", []) if app.get("import_path") == APP_IMPORT_PATH]
    if not apps:
        raise ConfigError(f"{path}: no application with import_path {APP_IMPORT_PATH}")
    app = apps[0]
    if profile:
        app.setdefault("args", {})["profile"] = profile
    args = app.get("args") or {}
    settings = load_settings(args.get("profile"), args.get("overrides"))  # fail now, naming fields, not in a replica
    return config, app, settings


def _ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "token")
    with_serve_env(env)
    return env


def _ensure_token(env: dict[str, str]) -> str | None:
    if env["RAY_AUTH_MODE"] != "token":
        return None
    if not TOKEN_PATH.exists():
        subprocess.run([_bin("ray"), "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    return TOKEN_PATH.read_text().strip()


def _app_status(name: str, token: str | None) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{DASHBOARD}/api/serve/applications/", headers=headers, timeout=10)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return (response.json().get("applications") or {}).get(name)


def _wait_until_running(name: str, token: str | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        status = _app_status(name, token)
        if status:
            deployments = status.get("deployments") or {}
            line = f"{status.get('status')}: " + ", ".join(
                f"{d}={info.get('status')}" for d, info in sorted(deployments.items())
            )
            if line != last:
                _say(line)
                last = line
            if status.get("status") == "RUNNING":
                return
            if status.get("status") in ("DEPLOY_FAILED", "UNHEALTHY"):
                # The application's message only names the failed deployments; theirs say why.
                details = "\n".join([status.get("message") or ""] + [
                    f"{d}: {info.get('message')}" for d, info in sorted(deployments.items())
                    if info.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")
                ])
                raise RuntimeError(f"application {name} failed to deploy:\n{details}")
        time.sleep(2)
    raise RuntimeError(f"application {name} not running after {timeout_s:.0f}s; see `serve status`")


def _ray_running(env: dict[str, str]) -> bool:
    return subprocess.run([_bin("ray"), "status"], env=env, capture_output=True).returncode == 0


def _start_embedded_stores(settings: Settings, env: dict[str, str], started: list[Any]) -> Settings:
    """Start embedded PostgreSQL/Redis for what DATABASE_URL/REDIS_URL leave unset (appending each to `started`
    as soon as it runs, so a failure halfway still stops it) and export their URLs to Ray."""
    updates: dict[str, SecretStr] = {}
    if settings.database_url is None:
        postgres = EmbeddedPostgres(settings.data_dir)
        started.append(postgres)
        env["DATABASE_URL"] = postgres.start()
        updates["database_url"] = SecretStr(env["DATABASE_URL"])
        _say(f"embedded PostgreSQL + pgvector: data in {postgres.pgdata}")
    if settings.redis_url is None:
        redis = EmbeddedRedis(settings.data_dir)
        started.append(redis)
        env["REDIS_URL"] = redis.start()
        updates["redis_url"] = SecretStr(env["REDIS_URL"])
        _say(f"embedded Redis at {env['REDIS_URL']}")  # local, no password
    return settings.model_copy(update=updates)


def run_service(config_path: Path, profile: str | None, num_cpus: int | None, ready_timeout_s: float) -> int:
    """`eduserve run`. Long on purpose: start, wait, serve and stop in the order they happen, with the one
    try/finally that stops Ray and the embedded stores however it ends."""
    import asyncio

    from serve_app.bootstrap import ensure_demo_credentials

    config, app, settings = load_serve_config(config_path, profile)
    try:
        # `ray start --head` makes one node: only the ingress replicas can spread the stores here.
        refuse_beyond_one_machine(settings.ingress.num_replicas, 1, settings.unset_store_urls)
    except EmbeddedStoresRefused as exc:
        _say(f"error: {exc}")
        return 1
    env = _ray_env()
    token = _ensure_token(env)
    if _ray_running(env):
        _say("a Ray cluster is already running on this machine: stop it with `ray stop`, or deploy to it with "
             f"`serve deploy {config_path}`")
        return 1
    env.setdefault("EDUSERVE_DATA_DIR", str(settings.data_dir))

    http = config.get("http_options") or {}
    api = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"
    start = [_bin("ray"), "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats"]
    if num_cpus is not None:
        start += ["--num-cpus", str(num_cpus)]

    stopping = False
    embedded: list[Any] = []
    supervisor = StoreSupervisor(embedded, settings.storage.supervise_interval_s)  # restarts what we started

    def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: stop what we started
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (a bg job)
    try:
        settings = _start_embedded_stores(settings, env, embedded)
        supervisor.start()
        demo = asyncio.run(ensure_demo_credentials(settings))
        _say(f"starting Ray (RAY_AUTH_MODE={env['RAY_AUTH_MODE']})")
        # Own session: a Ctrl-C in the terminal reaches this process only, which then stops Ray with `ray stop`.
        subprocess.run(start, env=env, check=True, stdout=subprocess.DEVNULL, start_new_session=True)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
            yaml.safe_dump(config, handle, sort_keys=False)
        _say(f"deploying {config_path.name} (profile {app.get('args', {}).get('profile')!r}); first start loads models")
        try:
            subprocess.run([_bin("serve"), "deploy", handle.name, "-a", DASHBOARD], env=env, check=True)
        finally:
            os.unlink(handle.name)
        _wait_until_running(app["name"], token, ready_timeout_s)
        _print_banner(api, token, env, demo)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stopping = True
        _say("stopping")
        return 0
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        _say(f"error: {exc}")
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short (and `ray stop` inherits the ignore).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        subprocess.run([_bin("ray"), "stop"], env=env, capture_output=True)
        supervisor.stop()
        for store in reversed(embedded):
            store.stop()
        _say(("Ray" + (" and the embedded stores" if embedded else "")) + " stopped"
             + ("" if stopping else " after an error"))


def _print_banner(api: str, token: str | None, env: dict[str, str], demo: dict[str, str]) -> None:
    lines = [
        "",
        "eduserve is running",
        f"  API              {api}",
        f"  OpenAPI docs     {api}/docs",
        f"  Ray dashboard    {DASHBOARD}",
        f"  demo admin       {demo['email']} / {demo['password']}",
        f"  demo API key     {demo['api_key']}",
        f"  try it           curl -s {api}/v1/embeddings -H 'Authorization: Bearer {demo['api_key']}' "
        "-H 'content-type: application/json' -d '{\"input\": \"hello\"}'",
    ]
    if token:
        lines += [
            f"  dashboard token  in {TOKEN_PATH} (the dashboard asks for it)",
            "  serve CLI        RAY_AUTH_MODE=token .venv/bin/serve status   (or: make status)",
        ]
    else:
        lines += [f"  serve CLI        RAY_AUTH_MODE={env['RAY_AUTH_MODE']} .venv/bin/serve status"]
    lines += ["Ctrl-C stops the app and Ray.", ""]
    print("\n".join(lines), flush=True)
