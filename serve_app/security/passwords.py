"""Argon2 password hashing (pwdlib) and the minimum password policy."""

from __future__ import annotations

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_HASHER = PasswordHash((Argon2Hasher(),))
# Verifying against this when the account does not exist makes unknown-user and wrong-password cost the same.
_DUMMY_HASH = _HASHER.hash("eduserve-dummy-password-for-timing")

MAX_PASSWORD_LENGTH = 128  # argon2 cost grows with input; bound it
COMMON_PASSWORDS = frozenset({
    "password", "password1", "password123", "passw0rd", "123456789", "1234567890", "12345678910", "qwertyuiop",
    "iloveyou", "letmein123", "welcome123", "administrator", "abc1234567", "changeme123", "football1",
})


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-time check; pass None for a missing account and it still spends the same time."""
    if password_hash is None:
        _HASHER.verify(password, _DUMMY_HASH)
        return False
    try:
        return _HASHER.verify(password, password_hash)
    except Exception:  # a malformed stored hash is a failed login, never a 500
        return False


def password_problems(password: str, email: str, min_length: int) -> list[str]:
    """Why a new password is refused (empty list: acceptable)."""
    problems = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if len(set(password)) < 4:
        problems.append("must use at least 4 different characters")
    if password.lower() in COMMON_PASSWORDS:
        problems.append("is too common")
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in password.lower():
        problems.append("must not contain your email name")
    return problems
