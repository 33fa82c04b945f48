"""The ingress's safety policy on the real Safety deployment of the cpu app (packaged toxicity model)."""

from __future__ import annotations

import uuid

import pytest
from ray import serve

from serve_app.bootstrap import create_user
from serve_app.routing import ModelRouter, Target, make_breakers
from serve_app.services.auth import Principal
from serve_app.services.safety import SafetyService
from serve_app.storage.db import Database

HARMLESS = " ".join(["Rivers carry water from the mountains to the sea, shaping valleys over many years."] * 12)
INSULT = "You are a stupid worthless idiot."


@pytest.fixture
async def safety(cpu_app, stores):
    settings = stores.settings()
    role = settings.models.safety
    handle = serve.get_deployment_handle(role.primary.name, "eduserve")
    router = ModelRouter("safety", Target(role.primary, handle), None, role.routing, 60.0, make_breakers())
    db = Database(stores.database_url, settings.storage)
    await db.open()
    yield SafetyService(router, db, settings.safety)
    await db.close()


@pytest.fixture
async def student(stores) -> Principal:
    user = await create_user(stores.settings(), f"safety-{uuid.uuid4().hex[:8]}@school.test", "Long-enough-pass-77",
                             "student")
    return Principal(user["id"], "student", "user", "test-jti")


async def test_one_toxic_sentence_in_a_long_answer_is_not_diluted(safety, student):
    (whole,) = await safety.scan([f"{HARMLESS} {INSULT} {HARMLESS}"], injection=False)
    assert safety.verdict("student", whole) is None  # scored as a whole, the insult drowns in the rest...
    shown, blocked = await safety.check_output(student, f"{HARMLESS} {INSULT} {HARMLESS}")
    assert (shown, blocked) == ("", "toxicity")  # ...sentence by sentence, it does not
    async with safety.db.connection() as conn:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM safety_events WHERE user_id = $1 AND direction = 'output'"
            " AND category = 'toxicity' AND action = 'blocked'", uuid.UUID(student.user_id))
    assert recorded == 1


async def test_a_harmless_answer_passes_whole_with_personal_data_redacted(safety, student):
    shown, blocked = await safety.check_output(student, f"{HARMLESS}\n\nWrite to ada@example.com for help.")
    assert blocked is None
    assert shown.startswith(HARMLESS) and "ada@example.com" not in shown and "help." in shown
