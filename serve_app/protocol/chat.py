"""`POST /v1/chat/completions` and `/v1/completions` (OpenAI shapes) and `/v2/chat` (sessions) schemas.

The /v1 schemas check what the service itself relies on (messages, limits, the OpenAI ranges); the engine
(vLLM's own OpenAI layer) validates the rest. Answers are the engine's, in the OpenAI shape, so they have no
response models here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serve_app.protocol.common import EngineRequest, StrictRequest


class TextPart(BaseModel):
    type: Literal["text"] = Field(description="only text parts: the served models read text")
    text: str


class FunctionCall(BaseModel):
    name: str = Field(min_length=1)
    arguments: str = Field(description="JSON text, as the model wrote it")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """One message. Tool turns as OpenAI has them: an assistant message with `tool_calls` (its `content` may be
    null), then one `tool` message per call, with that call's `tool_call_id`."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(None, description="text, or a list of text parts")
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_what_its_role_needs(self) -> ChatMessage:
        if self.role == "assistant":
            if self.content is None and not self.tool_calls:
                raise ValueError("an assistant message needs content or tool_calls")
        elif self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = Field(
        False, description="vLLM's extension: with include_usage, the usage so far on every chunk")


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema")
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: dict[str, str] = Field(description='{"name": <one of the tools>}')


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs a json_schema")
        return self


# vLLM's own fields for constrained decoding (besides `response_format`)
STRUCTURED_OUTPUT_FIELDS = frozenset({"structured_outputs", "guided_json", "guided_regex", "guided_choice",
                                      "guided_grammar"})


class GenerationRequest(EngineRequest):
    """What chat and text completions share. Other fields (vLLM's sampling extensions such as `top_k`, `min_p`,
    `repetition_penalty`) go to the engine, which applies them or answers 400."""

    model: str | None = Field(None, description="served model name (or a LoRA adapter's); the profile's LLM when "
                                                "omitted")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="default 1")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16, description="choices to generate")
    stop: str | list[str] | None = Field(None, description="up to 4 strings")
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return value

    def texts(self) -> list[str]:
        """The request's texts, for the service's length limits."""
        raise NotImplementedError

    def constrained(self) -> bool:
        """Whether the answer must follow a format (JSON, a grammar): the safety pipeline then never rewrites it."""
        extra = self.model_extra or {}
        fmt = getattr(self, "response_format", None) or extra.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else getattr(fmt, "type", None)
        return kind not in (None, "text") or bool(STRUCTURED_OUTPUT_FIELDS & extra.keys())

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not token.isdigit() or not -100 <= bias <= 100:
                raise ValueError("maps token ids (as strings) to biases in [-100, 100]")
        return value


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name for max_tokens")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def texts(self) -> list[str]:
        """Each message's text, in order."""
        return [message.text() for message in self.messages]


def prompt_items(prompt: Any) -> list[Any]:
    """A completion `prompt` as one item per prompt: a text, texts, token ids, or lists of token ids."""
    return prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]


class CompletionRequest(GenerationRequest):
    """Legacy text completion: the prompt is continued as is, with no chat template."""

    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text, texts, token ids, or lists of token ids")
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=16)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if not value or any((isinstance(i, str) and not i.strip()) or (isinstance(i, list) and not i)
                            for i in prompt_items(value)):
            raise ValueError("must not be empty")
        return value

    def prompts(self) -> list[str | list[int]]:
        """One item per prompt: a text or token ids."""
        return prompt_items(self.prompt)

    def texts(self) -> list[str]:
        """The prompt's texts (token-id prompts have none to check)."""
        return [p for p in self.prompts() if isinstance(p, str)]

    def token_limit(self) -> int | None:
        return self.max_tokens


# ---------------------------------------------------------------------------------------------- /v2/chat


class SessionCreate(StrictRequest):
    title: str = Field("", max_length=200)
    retrieval: bool = Field(False, description="ground answers in the caller's documents (RAG)")


class MessageCreate(StrictRequest):
    content: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class MessageOut(BaseModel):
    id: str
    role: Literal["system", "user", "assistant"]
    content: str
    status: Literal["pending", "completed", "interrupted", "blocked", "error"]
    token_count: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class SessionOut(BaseModel):
    id: str
    title: str
    retrieval: bool
    created_at: datetime
    updated_at: datetime


class SessionList(BaseModel):
    data: list[SessionOut]
    has_more: bool
    next_before: str | None = Field(None, description="pass as `before` for the next (older) page")


class SessionDetail(SessionOut):
    messages: list[MessageOut] = Field(description="chronological; the newest `limit` before the cursor")
    has_more: bool
    next_before: str | None = None
