"""Which served model name belongs to which role; the answer to `model` in a request."""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.errors import EduserveError, ErrorCode
from serve_app.model_config import RoleConfig


@dataclass(frozen=True)
class ServedModel:
    name: str
    role: str
    aliases: tuple[str, ...]
    multiplexed_id: str | None = None  # None: the deployment's own model; else loaded on demand by this id


class ModelCatalog:
    def __init__(self, roles: dict[str, RoleConfig]):
        self.by_role = {
            role: ServedModel(cfg.served_model_name, role, tuple(cfg.aliases)) for role, cfg in roles.items()
        }
        self.multiplexed = {
            name: ServedModel(name, role, (), name) for role, cfg in roles.items() for name in cfg.multiplexed_names()
        }
        self._by_name = dict(self.multiplexed)
        for model in self.by_role.values():
            for name in (model.name, *model.aliases):
                self._by_name[name] = model

    def models(self) -> list[ServedModel]:
        """Every served model: each role's own, then the multiplexed ones."""
        return list(self.by_role.values()) + list(self.multiplexed.values())

    def multiplexed_of(self, role: str) -> list[str]:
        return sorted(name for name, model in self.multiplexed.items() if model.role == role)

    def resolve(self, role: str, requested: str | None) -> ServedModel:
        """The model serving `role`, checking that `requested` (when given) names it."""
        if requested is None:
            return self.by_role[role]
        model = self._by_name.get(requested)
        if model is None:
            served = sorted(m.name for m in self.by_role.values())
            raise EduserveError(ErrorCode.MODEL_NOT_FOUND, f"model {requested!r} not found; served: {served}")
        if model.role != role:
            raise EduserveError(
                ErrorCode.BAD_REQUEST, f"model {requested!r} is a {model.role}, not a {role}"
            )
        return model
