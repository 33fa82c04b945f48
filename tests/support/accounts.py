"""Signed-in HTTP clients for the API tests: a fresh student registered through the API, or any user by login."""

from __future__ import annotations

import uuid

import httpx

PASSWORD = "Long-enough-pass-77"


def login_client(base_url: str, email: str, password: str = PASSWORD, timeout: float = 180) -> httpx.Client:
    """A client that sends the user's JWT (from `/v2/auth/login`) on every request."""
    http = httpx.Client(base_url=base_url, timeout=timeout)
    login = http.post("/v2/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return http


def new_student(base_url: str, prefix: str = "student") -> httpx.Client:
    """Registers a new student (`/v2/auth/register`) and signs in; the address is on `.email`."""
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@school.test"
    register = httpx.post(f"{base_url}/v2/auth/register", json={"email": email, "password": PASSWORD})
    assert register.status_code == 201, register.text
    http = login_client(base_url, email)
    http.email = email  # type: ignore[attr-defined]
    return http
