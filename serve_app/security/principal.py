"""Who is calling: the authenticated caller every protected route and service works with."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a signed-in user (JWT) or a service client (API key)."""

    user_id: str
    role: str
    kind: str  # "user" | "api_key"
    credential_id: str  # the JWT's jti, or the API key's id
    expires_at: float | None = None  # when the credential stops being valid (epoch seconds); None: never
    rate_limit: str | None = None  # an API key's own limit; None: the configured per-caller limit

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.credential_id if self.kind == 'api_key' else self.user_id}"
