"""`eduserve ingest PATH --collection NAME`: upload a file or a folder of files (.pdf, .md, .txt) to a running
service, one file per request, with a progress bar. Uses the service's API, so every rule (access, duplicates,
chunking) is the server's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
from tqdm import tqdm

SUFFIXES = {".pdf", ".md", ".markdown", ".txt"}


def find_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


def default_api_key(data_dir: Path) -> str | None:
    if os.environ.get("EDUSERVE_API_KEY"):
        return os.environ["EDUSERVE_API_KEY"]
    demo = data_dir / "demo_credentials.json"
    return json.loads(demo.read_text())["api_key"] if demo.exists() else None


def ingest(path: Path, collection: str, url: str, api_key: str, timeout_s: float = 300.0) -> dict[str, int]:
    files = find_files(path)
    if not files:
        raise FileNotFoundError(f"no .pdf, .md or .txt files under {path}")
    totals = {"files": len(files), "added": 0, "duplicates": 0, "chunks": 0, "failed": 0}
    headers = {"Authorization": f"Bearer {api_key}"}
    with (
        httpx.Client(base_url=url, timeout=timeout_s, headers=headers) as http,
        tqdm(files, unit="file", desc=f"ingesting into {collection}") as progress,
    ):
        for file in progress:
            progress.set_postfix_str(file.name[:40])
            response = http.post(
                "/v2/documents/upload", data={"collection": collection},
                files={"files": (file.name, file.read_bytes())},
            )
            if response.status_code != 201:
                totals["failed"] += 1
                message = response.json().get("error", {}).get("message", response.text)
                tqdm.write(f"  {file}: {response.status_code} {message}")
                continue
            for document in response.json()["documents"]:
                if document["duplicate"]:
                    totals["duplicates"] += 1
                else:
                    totals["added"] += 1
                    totals["chunks"] += document["chunks"]
    return totals
