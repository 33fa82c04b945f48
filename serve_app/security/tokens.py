"""JWT access tokens (python-jose) and opaque secrets (refresh tokens, API keys), stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from jose import JWTError, jwt

from serve_app.errors import EduserveError, ErrorCode
from serve_app.settings import AuthSettings

API_KEY_PREFIX = "esk_"


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    role: str
    token_id: str
    expires_at: int


def unauthorized(message: str = "invalid or expired credentials") -> EduserveError:
    return EduserveError(ErrorCode.UNAUTHORIZED, message, {"WWW-Authenticate": "Bearer"})


class TokenService:
    def __init__(self, settings: AuthSettings, hs256_secret: str | None):
        self.settings = settings
        if settings.jwt_algorithm == "RS256":
            self._signing_key = Path(settings.jwt_private_key_path).read_text()
            self._verify_key = Path(settings.jwt_public_key_path).read_text()
        else:
            if not hs256_secret:
                raise ValueError("HS256 needs a secret")
            self._signing_key = self._verify_key = hs256_secret

    def issue_access(self, user_id: str, role: str) -> tuple[str, AccessClaims]:
        now = int(time.time())
        claims = AccessClaims(user_id, role, uuid.uuid4().hex, now + self.settings.access_token_ttl_s)
        token = jwt.encode(
            {
                "iss": self.settings.issuer,
                "aud": self.settings.audience,
                "sub": user_id,
                "role": role,
                "iat": now,
                "nbf": now,
                "exp": claims.expires_at,
                "jti": claims.token_id,
            },
            self._signing_key,
            algorithm=self.settings.jwt_algorithm,
        )
        return token, claims

    def decode_access(self, token: str) -> AccessClaims:
        """Verify signature (only the configured algorithm: no `none`, no HS/RS confusion), iss, aud, exp, iat, jti."""
        try:
            payload = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.settings.jwt_algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                options={
                    "require_exp": True, "require_iat": True, "require_jti": True, "require_sub": True,
                    "require_aud": True, "require_iss": True, "leeway": 5,
                },
            )
        except JWTError:
            raise unauthorized() from None
        role = payload.get("role")
        if role not in ("student", "teacher", "admin"):
            raise unauthorized()
        return AccessClaims(str(payload["sub"]), role, str(payload["jti"]), int(payload["exp"]))


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Refresh tokens and API keys are random 256-bit secrets: a plain SHA-256 is the right storage hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """(full key shown once, lookup prefix stored in clear)."""
    prefix = secrets.token_hex(6)
    return f"{API_KEY_PREFIX}{prefix}_{new_secret()}", prefix


def parse_api_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(API_KEY_PREFIX):].partition("_")
    return prefix if sep and len(prefix) == 12 and secret else None


def same_hash(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def load_or_create_secret(path: Path) -> str:
    """The local HS256 key: created once (mode 0600) so tokens survive restarts and all replicas agree."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret
