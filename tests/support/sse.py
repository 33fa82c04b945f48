"""Reading a Server-Sent Events response (our `/v2/chat` streams) as a list of (event name, JSON data)."""

from __future__ import annotations

import json

import httpx


def sse_events(response: httpx.Response) -> list[tuple[str | None, dict]]:
    events, name = [], None
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.split(":", 1)[1])))
    return events
