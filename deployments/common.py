"""What every model deployment shares: device choice, model sources, load chains, token ids, refusals.

torch is imported inside functions only, so the ingress can import deployment classes to bind them
without pulling torch into its process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from deployments.spec import BackendSpec

logger = logging.getLogger("ray.serve.eduserve.deployments")

B = TypeVar("B")


# --------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceInfo:
    """The device a replica really runs on, and why it differs from the request when it does."""

    requested: str
    kind: str  # cuda | mps | cpu
    torch_device: str
    dtype: str  # float16 | bfloat16 | float32
    degraded_reason: str | None = None

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "kind": self.kind,
            "torch_device": self.torch_device,
            "dtype": self.dtype,
            "degraded_reason": self.degraded_reason,
        }


def select_device(requested: str = "auto") -> DeviceInfo:
    """Pick the device from the config and what this process can really use.

    A replica asked for CUDA that finds no usable GPU (e.g. a logical GPU on a GPU-less node) runs on CPU and
    says so in `degraded_reason`; it does not crash, so health and status can report it.
    """
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())

    if requested in ("auto", "cuda") and cuda:
        bf16 = torch.cuda.is_bf16_supported()
        return DeviceInfo(requested, "cuda", "cuda", "bfloat16" if bf16 else "float16")
    if requested in ("auto", "mps") and mps:
        return DeviceInfo(requested, "mps", "mps", "float16")
    reason = None
    if requested == "cuda":
        reason = (
            "cuda requested but torch.cuda.is_available() is False "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); running on cpu"
        )
    elif requested == "mps":
        reason = "mps requested but not available; running on cpu"
    return DeviceInfo(requested, "cpu", "cpu", "float32", reason)


def configure_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------- model sources


class ModelSourceError(ValueError):
    pass


PREPARED_MARKER = ".complete"  # written last by model preparation: a folder without it is half-built


def is_prepared(path: Path, recipe: int = 1) -> bool:
    """Built completely, by a recipe at least this new (a preparer bumps its recipe when what it builds changes,
    so an artefact from an older recipe is rebuilt rather than served)."""
    marker = Path(path) / PREPARED_MARKER
    if not marker.exists():
        return False
    try:
        built = int(json.loads(marker.read_text() or "{}").get("recipe", 1))
    except (ValueError, AttributeError):
        built = 1
    return built >= recipe


def resolve_model_source(source: str, models_dir: Path | None = None) -> str:
    """Turn a profile's model source into what a loader accepts.

    - ``prepared:<name>/<variant>``: an artefact built by model preparation under ``models_dir``
      (``eduserve prepare-models``); missing or half-built is an error that says how to build it.
    - ``package:<module>[/<subpath>]``: a folder inside an installed wheel, found without importing the module
      (some model wheels import heavy optional dependencies at import time). With no subpath, ``model/`` is used
      when the package has one.
    - an existing local path: returned as is (``~`` expanded).
    - anything else is treated as a hub id; with ``HF_HUB_OFFLINE=1`` it resolves only from the local cache.
    """
    if source.startswith("prepared:"):
        if models_dir is None:
            raise ModelSourceError(f"{source!r} needs the prepared-models directory")
        path = Path(models_dir) / source.removeprefix("prepared:")
        if not is_prepared(path):
            raise ModelSourceError(f"{path} is not prepared; run `eduserve prepare-models` (or `make models`)")
        return str(path)
    if source.startswith("package:"):
        module, _, subpath = source.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise ModelSourceError(f"package {module!r} is not installed (model source {source!r})")
        root = Path(spec.origin).parent
        path = root / subpath if subpath else (root / "model" if (root / "model").is_dir() else root)
        if not path.exists():
            raise ModelSourceError(f"{path} does not exist (model source {source!r})")
        return str(path)
    expanded = Path(os.path.expandvars(source)).expanduser()
    if expanded.exists():
        return str(expanded)
    if source.startswith((".", "/", "~", "$")):
        raise ModelSourceError(f"model path {source!r} does not exist")
    return source


# --------------------------------------------------------------------------------------------- load chain


@dataclass
class LoadAttempt:
    backend: str
    model: str
    error: str | None


@dataclass
class LoadedBackend(Generic[B]):
    backend: B
    spec: BackendSpec
    attempts: list[LoadAttempt]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.spec.backend,
            "model": self.spec.model,
            "failed_before": [a.__dict__ for a in self.attempts if a.error],
        }


class NoBackendLoaded(RuntimeError):
    pass


def default_data_dir() -> Path:
    """$EDUSERVE_DATA_DIR, else the user's data directory (`~/.local/share/eduserve`), on the machine that asks."""
    if os.environ.get("EDUSERVE_DATA_DIR"):
        return Path(os.environ["EDUSERVE_DATA_DIR"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "eduserve"


def default_models_dir() -> Path:
    """Prepared models on this node: $EDUSERVE_MODELS_DIR, else `<data dir>/models`. A replica calls it on its
    own node: a path computed where the app was built may not exist (or mean the same) on a worker."""
    if os.environ.get("EDUSERVE_MODELS_DIR"):
        return Path(os.environ["EDUSERVE_MODELS_DIR"]).expanduser()
    return default_data_dir() / "models"


def _prepared_here(source: str, models_dir: str | Path | None) -> str:
    """A `prepared:` source on this node, built now (once per node, under a file lock) when it is missing: a
    replica on a node where `make models` never ran prepares what it needs instead of failing."""
    models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
    try:
        return resolve_model_source(source, models_dir)
    except ModelSourceError:
        from deployments.prepare import prepare, prepared_name, preparer

        name = prepared_name(source)
        if name is None or preparer(name) is None:
            raise
        logger.warning("%s is not prepared on this node; preparing it in %s", source, models_dir)
        prepare([name], models_dir)
        return resolve_model_source(source, models_dir)


def _resolve_prepared(spec: BackendSpec, models_dir: str | Path | None) -> BackendSpec:
    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("prepared:"):
            return _prepared_here(value, models_dir)
        return value

    return spec.model_copy(update={
        "model": resolve(spec.model),
        "options": {key: resolve(value) for key, value in spec.options.items()},
    })


class UnknownBackend(LookupError):
    pass


class _ChainLoader(Generic[B]):
    """Bookkeeping of one walk down a load chain (shared by the plain and the async walk)."""

    def __init__(self, factories: dict[str, Callable[[BackendSpec, DeviceInfo], B]], device: DeviceInfo,
                 models_dir: str | Path | None):
        self.factories, self.device, self.models_dir = factories, device, models_dir
        self.attempts: list[LoadAttempt] = []

    def construct(self, spec: BackendSpec) -> B:
        factory = self.factories.get(spec.backend)
        if factory is None:
            raise UnknownBackend(f"unknown backend {spec.backend!r}; known: {sorted(self.factories)}")
        return factory(_resolve_prepared(spec, self.models_dir), self.device)

    def failed(self, spec: BackendSpec, exc: BaseException) -> None:
        error = str(exc) if isinstance(exc, UnknownBackend) else f"{type(exc).__name__}: {exc}"
        logger.error("could not load %s:%s: %s", spec.backend, spec.model, error)
        self.attempts.append(LoadAttempt(spec.backend, spec.model, error))

    def loaded(self, spec: BackendSpec, backend: B) -> LoadedBackend[B]:
        self.attempts.append(LoadAttempt(spec.backend, spec.model, None))
        if len(self.attempts) > 1:
            logger.warning("loaded fallback %s:%s after %d failure(s)", spec.backend, spec.model,
                           len(self.attempts) - 1)
        else:
            logger.info("loaded %s:%s on %s", spec.backend, spec.model, self.device.torch_device)
        return LoadedBackend(backend, spec, self.attempts)

    def exhausted(self) -> NoBackendLoaded:
        details = "; ".join(f"{a.backend}:{a.model} -> {a.error}" for a in self.attempts)
        return NoBackendLoaded(f"no entry of the load chain could be loaded: {details}")


def load_chain(
    chain: Sequence[BackendSpec],
    factories: dict[str, Callable[[BackendSpec, DeviceInfo], B]],
    device: DeviceInfo,
    models_dir: str | Path | None = None,
) -> LoadedBackend[B]:
    """Try each (backend, model) in order; the first that loads serves. Failures are logged and reported.

    `prepared:` sources (the model, and any option naming one) are resolved here, so backends only ever see
    real paths or hub ids."""
    loader = _ChainLoader(factories, device, models_dir)
    for spec in chain:
        try:
            return loader.loaded(spec, loader.construct(spec))
        except Exception as exc:  # a load failure of any kind moves on to the next entry
            loader.failed(spec, exc)
    raise loader.exhausted()


async def load_chain_async(
    chain: Sequence[BackendSpec],
    factories: dict[str, Callable[[BackendSpec, DeviceInfo], B]],
    device: DeviceInfo,
    models_dir: str | Path | None = None,
) -> LoadedBackend[B]:
    """`load_chain` for backends that finish starting on the replica's event loop: a backend with an async
    `start()` is started before it counts as loaded, and one that fails to start is shut down and passed over."""
    loader = _ChainLoader(factories, device, models_dir)
    for spec in chain:
        backend = None
        try:
            backend = loader.construct(spec)
            if hasattr(backend, "start"):
                await backend.start()
            return loader.loaded(spec, backend)
        except Exception as exc:
            if backend is not None and hasattr(backend, "shutdown"):
                backend.shutdown()
            loader.failed(spec, exc)
    raise loader.exhausted()


# --------------------------------------------------------------------------------------------- token ids


class InvalidTokens(ValueError):
    pass


def text_of_token_ids(tokenizer: Any, ids: Sequence[int]) -> str:
    """The text that token ids of this model's vocabulary stand for; an id outside it is an InvalidTokens."""
    size = len(tokenizer)
    bad = [t for t in ids if not 0 <= t < size]
    if bad:
        raise InvalidTokens(f"token ids must be in [0, {size}) for this model; got {bad[:5]}")
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def truncate_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """At most `max_tokens` of the model's tokens of `text` (special tokens not counted)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


# --------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Refusal:
    """What a replica answers for a request it will not serve (a model it does not have, an input it cannot take)
    instead of raising, which the ingress's router would count against it; the router raises it as the API error
    (`serve_app.model_errors`). `code` is the code string of the ingress's ErrorCode, or an HTTP status where the
    engine's OpenAI layer gave one (vLLM's errors)."""

    code: str | int
    message: str
    param: str | None = None

    @classmethod
    def from_openai(cls, error: Any) -> Refusal:
        """From an OpenAI error body's `error` (a dict, or vLLM's ErrorInfo): status in `code`."""
        get = error.get if isinstance(error, dict) else lambda name: getattr(error, name, None)
        return cls(get("code") or 400, str(get("message") or "rejected"), get("param"))


def set_offline_env(offline: bool) -> None:
    """With offline on, Hugging Face libraries never reach for a hub: a missing model is an error, not a download."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
