"""Model preparation, run once before serving (the run command and CI do it): check that every model a
profile names is present, and build derived artefacts (converted formats) into the data directory.

Each step is cached: a second run does nothing and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from deployments.common import ModelSourceError, resolve_model_source
from deployments.spec import BackendSpec

logger = logging.getLogger("eduserve.prepare")


@dataclass
class PreparedModel:
    backend: str
    source: str
    location: str | None
    note: str


def check_sources(chains: Iterable[BackendSpec], offline: bool) -> list[PreparedModel]:
    """Resolve every (backend, model) of the load chains; offline, a model that is not on disk is an error."""
    results = []
    for spec in chains:
        try:
            location = resolve_model_source(spec.model)
        except ModelSourceError as exc:
            raise ModelSourceError(f"{spec.backend}: {exc}") from None
        if location == spec.model and not offline:
            results.append(PreparedModel(spec.backend, spec.model, None, "hub id: fetched by the replica"))
        elif location == spec.model:
            raise ModelSourceError(
                f"{spec.backend}: {spec.model!r} is neither a package nor a local path, and the profile is offline"
            )
        else:
            results.append(PreparedModel(spec.backend, spec.model, location, "present"))
    return results
