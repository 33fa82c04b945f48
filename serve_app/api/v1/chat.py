from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from serve_app.api.deps import CurrentPrincipal, State
from serve_app.errors import EduserveError, ErrorCode, error_body
from serve_app.protocol.chat import ChatCompletion, ChatCompletionRequest
from serve_app.protocol.common import ERROR_RESPONSES
from serve_app.services.safety import ContentBlocked, OutputGuard

router = APIRouter(tags=["openai"])
logger = logging.getLogger("ray.serve.eduserve.chat")


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}, "description": "stream=true: SSE"}},
)
async def create_chat_completion(request: ChatCompletionRequest, principal: CurrentPrincipal,
                                 state: State):
    """OpenAI chat completions, whole or streamed (`data: {chunk}` events, then `data: [DONE]`).
    A request without a system message gets the service's tutor system prompt. User messages pass the safety
    pipeline (a block is a 400 naming the category); an answer the pipeline stops ends with
    `finish_reason: content_filter`, as OpenAI's do."""
    model = state.chat.model_name(request.model)
    model_id = state.chat.model_id(request.model)  # a LoRA adapter, when the profile serves some
    messages = [m.as_model_message() for m in request.messages]
    user_indices = [i for i, m in enumerate(messages) if m["role"] == "user"]
    checked = await state.safety.check_inputs(principal, [messages[i]["content"] for i in user_indices])
    for index, text in zip(user_indices, checked, strict=True):
        messages[index] = {**messages[index], "content": text}
    payload = state.chat.payload(
        messages,
        max_tokens=request.token_limit(),
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.seed,
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if not request.stream:
        result = await state.chat.complete(payload, model_id)
        text, blocked = await state.safety.check_output(principal, result["text"])
        return ChatCompletion(
            id=completion_id, created=created, model=model,
            choices=[{"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": "content_filter" if blocked else result["finish_reason"]}],
            usage=result["usage"],
        )
    items = await state.chat.stream(payload, model_id)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    guard = state.safety.output_guard(principal)
    return EventSourceResponse(_openai_chunks(items, guard, completion_id, created, model, include_usage), ping=15)


async def _openai_chunks(
    items: AsyncIterator[dict[str, Any]], guard: OutputGuard, completion_id: str, created: int, model: str,
    include_usage: bool,
) -> AsyncIterator[dict[str, str]]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, str]:
        body = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if delta is not None else [],
            **extra,
        }
        return {"data": json.dumps(body)}

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for item in guard.stream(items):
            if "delta" in item:
                yield chunk({"content": item["delta"]})
            else:
                yield chunk({}, item["finish_reason"])
                if include_usage:
                    yield chunk(None, usage=item["usage"])
    except ContentBlocked:  # the rest of the answer is withheld; the model's stream is closed with this one
        await items.aclose()
        yield chunk({}, "content_filter")
    except EduserveError as exc:  # after the first chunk the status is sent: report in-band, OpenAI style
        yield {"data": json.dumps(error_body(exc.code, exc.message))}
    except Exception:
        logger.exception("chat completion stream failed")
        yield {"data": json.dumps(error_body(ErrorCode.INTERNAL, "generation failed"))}
    yield {"data": "[DONE]"}
