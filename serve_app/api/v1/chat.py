"""`POST /v1/chat/completions` and `POST /v1/completions`: OpenAI requests, answered by the engine's own OpenAI
layer (vLLM's), with the service's safety pipeline on both sides."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode, error_body
from serve_app.protocol.chat import ChatCompletionRequest, CompletionRequest
from serve_app.services.completions import CompletionStream

router = APIRouter(tags=["openai"])
logger = logging.getLogger("ray.serve.eduserve.chat")

STREAMED = {200: {"content": {"application/json": {}, "text/event-stream": {}},
                  "description": "the OpenAI object; with stream=true, server-sent events ending in `data: [DONE]`"}}


@router.post("/v1/chat/completions", responses=STREAMED)
async def create_chat_completion(request: ChatCompletionRequest, principal: CurrentPrincipal, state: State):
    """OpenAI chat completions, whole or streamed: tools and tool turns, `response_format` (json_object,
    json_schema), logprobs, `n`, penalties, `seed`, `stop`, usage, as vLLM serves them. A chat without a system
    message gets the service's tutor system prompt. User messages pass the safety pipeline (a block is a 400
    naming the category); a choice the pipeline stops ends with `finish_reason: content_filter`, as OpenAI's do."""
    return _answer(await state.completions.chat_completion(principal, request))


@router.post("/v1/completions", responses=STREAMED)
async def create_completion(request: CompletionRequest, principal: CurrentPrincipal, state: State):
    """OpenAI (legacy) text completions, whole or streamed: the prompt (text, texts or token ids) is continued as
    is, without a chat template. Text prompts pass the safety pipeline."""
    return _answer(await state.completions.completion(principal, request))


def _answer(result: dict[str, Any] | CompletionStream):
    if isinstance(result, CompletionStream):
        return EventSourceResponse(_events(result.chunks, result.source), ping=15)
    return JSONResponse(result)


async def _events(chunks: AsyncIterator[dict[str, Any]], source: AsyncIterator[Any]) -> AsyncIterator[dict[str, str]]:
    """SSE events, always ending with `data: [DONE]`; a failure after the first event is reported in-band, as
    OpenAI does (the status line has gone already)."""
    try:
        async for chunk in chunks:
            yield {"data": json.dumps(chunk, separators=(",", ":"))}
    except EduserveError as exc:
        yield {"data": json.dumps(error_body(exc.code, exc.message))}
    except Exception:
        logger.exception("completion stream failed")
        yield {"data": json.dumps(error_body(ErrorCode.INTERNAL, "generation failed"))}
    finally:
        await source.aclose()  # the engine stops generating when the client goes away
    yield {"data": "[DONE]"}
