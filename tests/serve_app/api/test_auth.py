"""/v2/auth/* and bearer authentication on the real app (real PostgreSQL, real Redis)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid

import httpx
import pytest
from jose import jwt

PASSWORD = "Plenty-of-entropy-42"


def new_email() -> str:
    return f"student-{uuid.uuid4().hex[:10]}@school.test"


def register(anonymous: httpx.Client, email: str | None = None, password: str = PASSWORD) -> dict:
    response = anonymous.post("/v2/auth/register", json={"email": email or new_email(), "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def login(anonymous: httpx.Client, email: str, password: str = PASSWORD) -> dict:
    response = anonymous.post("/v2/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def student(anonymous) -> dict:
    user = register(anonymous)
    return {**user, **login(anonymous, user["email"])}


def test_register_login_me(anonymous):
    email = new_email()
    user = register(anonymous, email)
    assert user["role"] == "student" and user["email"] == email and "password" not in json.dumps(user)
    tokens = login(anonymous, email.upper())  # emails compare case-insensitively
    assert tokens["token_type"] == "bearer" and 0 < tokens["expires_in"] <= 900
    me = anonymous.get("/v2/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == user["id"]


def test_oauth2_password_form_login(anonymous):
    user = register(anonymous)
    response = anonymous.post("/v2/auth/login", data={"username": user["email"], "password": PASSWORD})
    assert response.status_code == 200 and response.json()["access_token"]


def test_access_token_claims(anonymous, student):
    claims = jwt.get_unverified_claims(student["access_token"])
    assert claims["iss"] == "eduserve" and claims["aud"] == "eduserve-api" and claims["sub"] == student["id"]
    assert claims["role"] == "student" and claims["jti"] and claims["exp"] - claims["iat"] == 900


def test_passwords_are_stored_as_argon2(stores, anonymous):
    import asyncio

    import asyncpg

    user = register(anonymous)

    async def stored_hash():
        conn = await asyncpg.connect(stores.database_url)
        try:
            return await conn.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user["id"])
        finally:
            await conn.close()

    assert asyncio.run(stored_hash()).startswith("$argon2id$")


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short1A", "at least 10"), ("aaaaaaaaaaaa", "4 different"), ("password123", "too common")],
)
def test_password_policy(anonymous, password, reason):
    response = anonymous.post("/v2/auth/register", json={"email": new_email(), "password": password})
    assert response.status_code == 422 and reason in response.json()["error"]["message"]


def test_duplicate_registration_is_a_conflict(anonymous):
    email = new_email()
    register(anonymous, email)
    response = anonymous.post("/v2/auth/register", json={"email": email.upper(), "password": PASSWORD})
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def test_no_user_enumeration_on_login(anonymous):
    user = register(anonymous)
    wrong_password = anonymous.post("/v2/auth/login", json={"email": user["email"], "password": "Not-the-password-1"})
    unknown_user = anonymous.post("/v2/auth/login", json={"email": new_email(), "password": "Not-the-password-1"})
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


def test_refresh_rotates_and_reuse_revokes_the_family(anonymous, student):
    first = student["refresh_token"]
    second = anonymous.post("/v2/auth/refresh", json={"refresh_token": first})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first
    assert anonymous.get("/v2/auth/me", headers=bearer(rotated["access_token"])).status_code == 200

    replay = anonymous.post("/v2/auth/refresh", json={"refresh_token": first})  # a stolen, already-used token
    assert replay.status_code == 401 and "revoked" in replay.json()["error"]["message"]
    # ...and the legitimate holder's newer token is revoked with it
    assert anonymous.post("/v2/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    assert anonymous.post("/v2/auth/refresh", json={"refresh_token": "garbage"}).status_code == 401


def test_logout_revokes_the_access_token_and_the_sign_in(anonymous, student):
    headers = bearer(student["access_token"])
    response = anonymous.post("/v2/auth/logout", headers=headers, json={"refresh_token": student["refresh_token"]})
    assert response.status_code == 204
    assert anonymous.get("/v2/auth/me", headers=headers).status_code == 401
    assert anonymous.post("/v2/auth/refresh", json={"refresh_token": student["refresh_token"]}).status_code == 401


def _forge(claims: dict, key: str = "wrong-key", algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_jwt_attacks_are_rejected_with_401(anonymous, student, stores):
    good = student["access_token"]
    claims = jwt.get_unverified_claims(good)
    header, payload, signature = good.split(".")
    secret = (stores.data_dir / "secrets" / "jwt_secret").read_text().strip()
    now = int(time.time())
    attacks = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "tampered payload": f"{header}.{_b64({**claims, 'role': 'admin'})}.{signature}",
        "wrong key": _forge(claims),
        "expired": _forge({**claims, "iat": now - 3600, "exp": now - 1800}, secret),
        "wrong audience": _forge({**claims, "aud": "another-api"}, secret),
        "wrong issuer": _forge({**claims, "iss": "someone-else"}, secret),
        "no jti": _forge({k: v for k, v in claims.items() if k != "jti"}, secret),
        "not a jwt": "abc.def",
    }
    for name, token in attacks.items():
        response = anonymous.get("/v2/auth/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "unauthorized", name
        assert response.headers["www-authenticate"] == "Bearer", name
    # the genuine token still works, so the 401s above were about the attacks
    assert anonymous.get("/v2/auth/me", headers=bearer(good)).status_code == 200


def test_token_of_a_deleted_user_is_rejected(anonymous, student):
    headers = bearer(student["access_token"])
    assert anonymous.delete("/v2/auth/me", headers=headers).status_code == 204
    response = anonymous.get("/v2/auth/me", headers=headers)
    assert response.status_code == 401 and "no longer exists" in response.json()["error"]["message"]
    assert anonymous.post("/v2/auth/refresh", json={"refresh_token": student["refresh_token"]}).status_code == 401


def test_protected_routes_need_credentials(anonymous, student):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/embeddings"), ("POST", "/v1/rerank"),
                         ("GET", "/v2/auth/me"), ("POST", "/v2/admin/api-keys")]:
        response = anonymous.request(method, path, json={})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
    # a student's JWT works on /v1 too
    response = anonymous.post("/v1/embeddings", json={"input": "hello"}, headers=bearer(student["access_token"]))
    assert response.status_code == 200


def test_api_keys_created_by_an_admin_work_as_bearer_and_can_be_revoked(anonymous, client, student):
    created = client.post("/v2/admin/api-keys", json={"name": "grader", "role": "teacher"})
    assert created.status_code == 201
    key = created.json()
    assert key["key"].startswith("esk_") and key["role"] == "teacher"
    assert anonymous.post("/v1/embeddings", json={"input": "x"}, headers=bearer(key["key"])).status_code == 200
    assert anonymous.post("/v1/embeddings", json={"input": "x"}, headers=bearer(key["key"] + "x")).status_code == 401

    assert client.delete(f"/v2/admin/api-keys/{key['id']}").status_code == 204
    assert anonymous.post("/v1/embeddings", json={"input": "x"}, headers=bearer(key["key"])).status_code == 401

    # students cannot create keys
    forbidden = anonymous.post("/v2/admin/api-keys", json={"name": "x"}, headers=bearer(student["access_token"]))
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"


def test_an_api_key_can_carry_its_own_rate_limit(anonymous, client):
    """A key made with its own limit is held to it, not to the configured per-caller limit (100000/minute here)."""
    created = client.post("/v2/admin/api-keys", json={"name": "tight", "role": "teacher", "rate_limit": "3/minute"})
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit"] == "3/minute"
    key = bearer(created.json()["key"])
    assert [anonymous.get("/v2/auth/me", headers=key).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = anonymous.get("/v2/auth/me", headers=key)
    assert refused.json()["error"]["code"] == "rate_limited" and "3/minute" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    # the admin's own key (no limit of its own) is not affected
    assert client.get("/v2/auth/me").status_code == 200

    for bad in ["fast", "0/minute", "5/fortnight", "3/minute\x00"]:
        response = client.post("/v2/admin/api-keys", json={"name": "x", "rate_limit": bad})
        assert response.status_code in (400, 422) and response.json()["error"]["code"], bad


def test_a_burst_on_one_key_gets_exactly_its_limit(client, cpu_app):
    """Concurrent hits of one key share Redis calls in the ingress: a burst of 40 on a 15/minute key still gets
    exactly 15 answers and 25 refusals."""
    created = client.post("/v2/admin/api-keys", json={"name": "burst", "role": "teacher", "rate_limit": "15/minute"})
    assert created.status_code == 201, created.text

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=cpu_app, timeout=60, headers=bearer(created.json()["key"])) as http:
            return [r.status_code for r in await asyncio.gather(*(http.get("/v2/auth/me") for _ in range(40)))]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 15 and statuses.count(429) == 25, statuses


def test_the_cli_creates_a_key_with_its_own_rate_limit_and_refuses_a_bad_one(stores, admin_key, capsys):
    import asyncio

    from serve_app.bootstrap import create_api_key
    from serve_app.cli import main

    key = asyncio.run(create_api_key(stores.settings(), "admin@tests.local", "backend", "admin", None, "20000/minute"))
    assert key["rate_limit"] == "20000/minute"
    assert main(["create-api-key", "--email", "admin@tests.local", "--name", "x", "--rate-limit", "lots"]) == 2
    assert "N/minute" in capsys.readouterr().err


def test_login_attempts_per_account_are_rate_limited_with_retry_after(anonymous):
    user = register(anonymous)
    statuses = []
    for _ in range(12):
        response = anonymous.post("/v2/auth/login", json={"email": user["email"], "password": "Wrong-password-00"})
        statuses.append(response.status_code)
    assert statuses[:10] == [401] * 10  # login_per_account: 10/minute
    assert statuses[10:] == [429, 429]
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "rate_limited"
    # the correct password is refused too while limited: brute force gains nothing by luck
    assert anonymous.post("/v2/auth/login", json={"email": user["email"], "password": PASSWORD}).status_code == 429
