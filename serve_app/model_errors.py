"""A model call's failures as the API's errors, in one place: Ray's failure modes (a replica gone, a timeout, back
pressure, a raise) and a replica's refusal (`deployments.common.Refusal`: a model it does not serve, an input it
cannot take)."""

from __future__ import annotations

from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from deployments.common import Refusal
from serve_app.errors import EduserveError, ErrorCode

UNAVAILABLE = (ActorDiedError, ActorUnavailableError, DeploymentUnavailableError, ReplicaUnavailableError, RayActorError)
# Failures that count against the primary and send the call to the fallback.
PRIMARY_FAULTS = (TimeoutError, RayTaskError, *UNAVAILABLE)


# What a model's code raises on an input it cannot take (a text the TTS cannot phonemise, ...): the request's
# fault, not the replica's. It is a 422, it does not count against the breaker, and no other tier is tried.
INPUT_ERRORS = (ValueError, TypeError, LookupError, OverflowError)


def caused_by_input(exc: BaseException) -> bool:
    return isinstance(exc, RayTaskError) and isinstance(getattr(exc, "cause", None), INPUT_ERRORS)


def api_error(role: str, exc: BaseException) -> EduserveError:
    """The API error for a model call that failed with `exc` (and had nowhere else to go). Never a 500: a model
    that raised is a 422 when the input caused it, else a 503 with Retry-After (the replica is failing)."""
    if isinstance(exc, EduserveError):
        return exc
    if caused_by_input(exc):
        return EduserveError(ErrorCode.UNPROCESSABLE_INPUT,
                             f"the {role} could not process this input ({type(exc.cause).__name__})")
    if isinstance(exc, BackPressureError):
        return EduserveError(ErrorCode.OVERLOADED, f"the {role} is at capacity; retry shortly", {"Retry-After": "1"})
    if isinstance(exc, TimeoutError):
        return EduserveError(ErrorCode.TIMEOUT, f"the {role} did not answer in time")
    if isinstance(exc, UNAVAILABLE):
        return EduserveError(
            ErrorCode.MODEL_UNAVAILABLE, f"the {role} is unavailable; retry shortly", {"Retry-After": "5"}
        )
    return EduserveError(ErrorCode.MODEL_FAILED, f"the {role} failed to process the request; retry shortly",
                         {"Retry-After": "5"})


# The engine's OpenAI errors carry their HTTP status in `code` (as vLLM's serving layer reports them).
ENGINE_STATUSES = {404: ErrorCode.MODEL_NOT_FOUND, 413: ErrorCode.PAYLOAD_TOO_LARGE, 429: ErrorCode.OVERLOADED,
                   503: ErrorCode.MODEL_UNAVAILABLE}


def refusal(role: str, refused: Refusal) -> EduserveError:
    """The API error for a replica's refusal: a replica answers so (rather than raising, which would count against
    it) for a model it does not serve or an input it cannot take. `code` is an ErrorCode's code string, or the
    engine's HTTP status (vLLM's OpenAI errors)."""
    code, message, param = refused.code, refused.message, refused.param
    if isinstance(code, int):
        if "maximum context length" in message:
            kind = ErrorCode.CONTEXT_LENGTH_EXCEEDED
        elif code < 500 or code in ENGINE_STATUSES:
            kind = ENGINE_STATUSES.get(code, ErrorCode.BAD_REQUEST)
        else:
            kind, message = ErrorCode.MODEL_FAILED, f"the {role} failed to process the request; retry shortly"
    else:
        kind = ErrorCode.of(code) or ErrorCode.BAD_REQUEST
    headers = {"Retry-After": "5"} if kind.status >= 500 else None
    return EduserveError(kind, message, headers, param=param)


def checked(role: str, result: Any) -> Any:
    """`result`, unless it is a replica's refusal: then its API error is raised."""
    if isinstance(result, Refusal):
        raise refusal(role, result)
    return result
