"""Closed-loop HTTP load with wrk (C, a few % of a core) so that the load generator does not take the CPU the
servers compete for on a 2-core machine; a Python client (httpx) cost enough to halve a peer's measured rate.
`apt install wrk` (Debian); bench scripts fall back to their httpx clients without it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_embeddings.lua")


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk_embeddings(url: str, clients: int, seconds: float, headers: dict[str, str] | None = None,
                   model: str | None = None, think_ms: float = 0) -> dict:
    """`clients` connections each posting one sentence after another for `seconds` (after a random pause of mean
    `think_ms` each, if given): req/s, p50/p99 (of the requests, pauses not counted), errors."""
    command = ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "--timeout", "30s",
               "-s", str(SCRIPT)]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command += [url] + (["--", model or "", str(think_ms)] if model or think_ms else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    try:
        return _parse(out)
    except (AttributeError, KeyError, ValueError) as exc:
        raise RuntimeError(f"could not read wrk's output ({exc!r}):\n{out}") from None


def _parse(out: str) -> dict:
    requests, elapsed = re.search(r"(\d+) requests in ([\d.]+\w+),", out).groups()
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))
    return {
        "sentences_per_s": (int(requests) - non_2xx) / (_ms(elapsed) / 1000),  # successful answers only
        "requests": int(requests),
        "errors": non_2xx + (sum(map(int, socket.groups())) if socket else 0),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "client": "wrk",
    }
