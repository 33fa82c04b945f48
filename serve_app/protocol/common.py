"""Schema pieces shared by several features."""

from __future__ import annotations

import re
from typing import Annotated, Any

import langcodes
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

_FIELD_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def _path_part(key: Any) -> str:
    """A key as the message shows it: a field name or an index; any other key (the caller's own text) as `*`."""
    text = str(key)
    return text if _FIELD_NAME.fullmatch(text) else "*"


INVALID_TEXT = "invalid_text"  # the validation error type of text that is not valid text
NUL = "NUL characters (\\u0000)"
SURROGATE = "unpaired surrogates (\\ud800-\\udfff)"


def _text_problem(text: str) -> str | None:
    """What makes `text` unusable: a NUL character (PostgreSQL cannot store one), or an unpaired surrogate (JSON
    can carry one as an escape, but it is no character: UTF-8, the tokenizers and the database all refuse it)."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def invalid_text_location(value: Any) -> tuple[str, str] | None:
    """Where in a JSON value (a dotted path; "" for the value itself) a string or key is not valid text, and why.
    Iterative: a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return path, problem
            continue
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            where = f"{path}.{_path_part(key)}" if path else _path_part(key)
            problem = _text_problem(key) if isinstance(key, str) else None
            if problem:
                return where, problem
            stack.append((where, child))
    return None


class RequestModel(BaseModel):
    """Base of every request body. Text that is not valid text (a NUL character, an unpaired surrogate) is refused
    here, naming the field: PostgreSQL cannot store it, the models cannot read it, and no client means to send it."""

    @model_validator(mode="before")
    @classmethod
    def _only_valid_text(cls, data: Any) -> Any:
        found = invalid_text_location(data)
        if found is not None:
            where, problem = found
            # The field is in the context: a whole-body check has no location of its own (serve_app/errors.py).
            raise PydanticCustomError(INVALID_TEXT, "text must not contain {problem}",
                                      {"problem": problem, "field": where or "body"})
        return data


class StrictRequest(RequestModel):
    """A request of our own (/v2): an unknown field is a mistake, refused."""

    model_config = ConfigDict(extra="forbid")


class OpenAICompatibleRequest(RequestModel):
    """OpenAI clients add fields over time; unknown ones are ignored rather than rejected. An explicit `null` for a
    field means its default, as OpenAI treats it."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


# Engine arguments a caller must not set: they select server-side templates, processors, scheduling or KV
# transfer, which are the operator's business.
OPERATOR_ONLY_FIELDS = frozenset({
    "chat_template", "logits_processors", "vllm_xargs", "priority", "request_id", "kv_transfer_params",
    "ec_transfer_params", "mm_processor_kwargs",
})


class EngineRequest(OpenAICompatibleRequest):
    """A request passed on to the engine: fields this schema does not name are kept and handed over (the engine
    applies them or refuses them), except those only the operator may set."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    @model_validator(mode="after")
    def _no_operator_fields(self) -> EngineRequest:
        refused = sorted(OPERATOR_ONLY_FIELDS & set(self.model_extra or {}))
        if refused:
            raise ValueError(f"{', '.join(refused)}: not accepted by this service")
        return self


def language_tag(value: str) -> str:
    """A language as a standard BCP 47 tag: `fr`, `FR`, `pt_BR`, `French` and `français` are accepted (names in
    any language CLDR knows, with langcodes' small fuzzy match: `Hakka dialect` is Hakka); anything that is not a
    language is refused rather than passed to a model."""
    value = value.strip()
    if langcodes.tag_is_valid(value.replace("_", "-")):
        tag = langcodes.standardize_tag(value)
    else:
        try:
            tag = str(langcodes.find(value))
        except LookupError:
            tag = None
    if tag is None or langcodes.Language.get(tag).language in (None, "und"):
        raise ValueError(f"{value!r} is not a known language: use a code such as `fr` or a name such as `French`")
    return tag


LanguageTag = Annotated[str, Field(min_length=2, max_length=40), AfterValidator(language_tag)]


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_request_error"])
    message: str
    code: str = Field(examples=["validation_error"])


class ErrorResponse(BaseModel):
    """The one error shape every endpoint answers with."""

    error: ErrorDetail


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}

# What any route may answer besides its success, in the one error shape (documented once, for the whole app).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description, **({"headers": _RETRY_AFTER} if retry else {})}
    for status, (description, retry) in {
        400: ("Invalid request (OpenAI-compatible /v1 routes), or a value the service cannot take", False),
        401: ("Missing, invalid, expired or signed-out credential", False),
        403: ("The credential's role may not do this", False),
        404: ("Unknown model or resource", False),
        413: ("Body, input or upload too large", False),
        422: ("Malformed request (product /v2 routes), or an input the model cannot process", False),
        429: ("Rate limited", True),
        503: ("A model, the database or the engine is unavailable or busy", True),
        504: ("A model timed out", False),
    }.items()
}
