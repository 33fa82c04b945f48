"""Every call from the ingress to a model deployment goes through a `ModelClient`.

It owns the per-call timeout and turns Ray's failure modes into the API's errors, so no route has to know them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from serve_app.errors import EduserveError, ErrorCode

logger = logging.getLogger("eduserve.routing")


class ModelClient:
    def __init__(self, role: str, handle: DeploymentHandle, timeout_s: float):
        self.role = role
        self.handle = handle
        self.timeout_s = timeout_s

    async def call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        response = getattr(self.handle, method).remote(*args, **kwargs)
        try:
            return await asyncio.wait_for(_resolve(response), timeout_s or self.timeout_s)
        except BackPressureError:
            raise EduserveError(
                ErrorCode.OVERLOADED, f"the {self.role} is at capacity; retry shortly", {"Retry-After": "1"}
            ) from None
        except TimeoutError:
            response.cancel()
            raise EduserveError(ErrorCode.TIMEOUT, f"the {self.role} did not answer in time") from None
        except (
            ActorDiedError,
            ActorUnavailableError,
            DeploymentUnavailableError,
            ReplicaUnavailableError,
            RayActorError,
        ) as exc:
            logger.warning("%s unavailable: %s", self.role, exc)
            raise EduserveError(
                ErrorCode.MODEL_UNAVAILABLE, f"the {self.role} is unavailable; retry shortly", {"Retry-After": "5"}
            ) from None
        except RayTaskError as exc:
            logger.error("%s failed: %s", self.role, exc)
            raise EduserveError(ErrorCode.INTERNAL, f"the {self.role} failed to process the request") from None


async def _resolve(response: Any) -> Any:
    return await response
