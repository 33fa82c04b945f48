"""The ingress's safety policy on the real Safety deployment of the cpu app (packaged toxicity model)."""

from __future__ import annotations

import uuid

import pytest
from ray import serve

from serve_app.bootstrap import create_user
from serve_app.routing import ModelRouter, Target, make_breakers
from serve_app.security.principal import Principal
from serve_app.services.safety import ContentBlocked, SafetyService
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


async def test_one_toxic_sentence_in_a_long_text_is_not_diluted(safety, student):
    padded = f"{HARMLESS} {INSULT} {HARMLESS}"
    (raw,) = await safety.router.call("check", [padded], False)
    assert raw["scores"]["toxicity"] < 0.1  # the model, on the whole text: the insult drowns in the rest...
    (report,) = await safety.scan([padded], injection=False)
    assert report["scores"]["toxicity"] > 0.9  # ...the policy also scores each sentence, and keeps the highest

    shown, blocked = await safety.check_output(student, padded)
    assert (shown, blocked) == ("", "toxicity")
    with pytest.raises(ContentBlocked) as refused:
        await safety.check_input(student, padded)
    assert refused.value.category == "toxicity"
    async with safety.db.connection() as conn:
        recorded = await conn.fetch(
            "SELECT direction FROM safety_events WHERE user_id = $1 AND category = 'toxicity' AND action = 'blocked'",
            uuid.UUID(student.user_id))
    assert sorted(r["direction"] for r in recorded) == ["input", "output"]


async def test_a_harmless_answer_passes_whole_with_personal_data_redacted(safety, student):
    shown, blocked = await safety.check_output(student, f"{HARMLESS}\n\nWrite to ada@example.com for help.")
    assert blocked is None
    assert shown.startswith(HARMLESS) and "ada@example.com" not in shown and "help." in shown
