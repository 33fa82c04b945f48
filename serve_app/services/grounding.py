"""Grounded answers: the sources a chat turn's answer must rest on, as the model sees them and as the client gets
them back (numbered references), and what is said when nothing relevant was found."""

from __future__ import annotations

import re
from typing import Any

NOTHING_FOUND = (
    "I could not find anything about this in your course materials or your documents, so I would rather not "
    "guess. Try rephrasing the question, or add a document that covers it."
)
GROUNDING = (
    "Answer the student's question using only the numbered sources below. Cite the sources you use as [1], [2]. "
    "If the sources do not contain the answer, say that you could not find it.\n\nSources:\n{sources}"
)
CITATION = re.compile(r"\[\d+\]")


def numbered_sources(hits: list[dict[str, Any]]) -> str:
    blocks = []
    for n, hit in enumerate(hits, start=1):
        heading = f" — {hit['heading']}" if hit.get("heading") else ""
        blocks.append(f"[{n}] {hit['document_title']}{heading}\n{hit['content']}")
    return "\n\n".join(blocks)


def source_refs(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"n": n, "document_id": h["document_id"], "title": h["document_title"], "chunk_id": h["chunk_id"],
         "position": h["position"], "score": round(float(h["score"]), 4)}
        for n, h in enumerate(hits, start=1)
    ]


def sources_footer(answer: str, refs: list[dict[str, Any]] | None) -> str | None:
    """When a grounded answer cites none of its sources, the list of them (appended so it stays traceable)."""
    if not refs or CITATION.search(answer):
        return None
    return "\n\nSources: " + "; ".join(f"[{r['n']}] {r['title']}" for r in refs)
