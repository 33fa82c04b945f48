"""The safety pipeline: the Safety deployment scores text, this decides by the caller's role what is blocked,
redacts personal data, and records every block (with the request id) in `safety_events`.

- input (before the model): toxicity, prompt injection, self-harm block with a 400 naming the category;
  personal data is redacted (or refused) per `safety.pii_action`;
- output (before the user): streamed answers are released in small word groups, each checked together with
  the rest of its sentence first; a block ends the stream. Personal data in answers is redacted, except in
  answers constrained to a format (JSON, tool calls), which are checked but never rewritten: a redaction would
  break the format the client parses.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

from deployments.text_split import paragraphs, sentences
from serve_app import metrics, request_trace
from serve_app.errors import EduserveError, ErrorCode
from serve_app.routing import ModelRouter
from serve_app.security.principal import Principal
from serve_app.settings import SafetySettings
from serve_app.storage.db import Database

logger = logging.getLogger("ray.serve.eduserve.safety")

SENTENCE_END = re.compile(r"[.!?]\s|\n")
CATEGORY_NAMES = {"toxicity": "harassment", "self_harm": "self-harm", "prompt_injection": "prompt-injection",
                  "pii": "personal-data", "blocked_term": "blocked-term"}


class ContentBlocked(EduserveError):
    def __init__(self, category: str, message: str):
        super().__init__(ErrorCode.CONTENT_BLOCKED, message, {"X-Eduserve-Safety-Category": category})
        self.category = category


class SafetyService:
    def __init__(self, router: ModelRouter, db: Database, settings: SafetySettings):
        self.router = router
        self.db = db
        self.settings = settings
        terms = [re.escape(term) for term in settings.blocked_terms if term.strip()]
        self.blocked_terms = re.compile(r"\b(?:" + "|".join(terms) + r")\b", re.IGNORECASE) if terms else None

    async def scan(self, texts: list[str], injection: bool = True) -> list[dict[str, Any]]:
        """One report per text, from the Safety deployment plus the operator's blocked terms (`blocked_term`).

        A text of several sentences is scored whole and sentence by sentence in the same call, and each model
        score is the highest of those: one bad sentence is not diluted by a long text around it (toxicity of an
        insult: 0.99999 alone, 0.006 inside twelve harmless sentences). Personal data and the redacted copy
        come from the whole text."""
        windows = [self._sentences(text) for text in texts]
        flat = texts + [window for sentences_of in windows for window in sentences_of]
        reports = await self.router.call("check", flat, injection)
        for text, report in zip(flat, reports, strict=True):
            hit = bool(self.blocked_terms and self.blocked_terms.search(text))
            report["scores"]["blocked_term"] = 1.0 if hit else 0.0
            if len(text.split()) < self.settings.injection_min_words:
                report["scores"]["prompt_injection"] = 0.0
        per_sentence = iter(reports[len(texts):])
        for report, sentences_of in zip(reports[:len(texts)], windows, strict=True):
            for sentence_report in (next(per_sentence) for _ in sentences_of):
                for category, score in sentence_report["scores"].items():
                    if category != "pii":
                        report["scores"][category] = max(report["scores"].get(category, 0.0), score)
        return reports[:len(texts)]

    @staticmethod
    def _sentences(text: str) -> list[str]:
        """The text's sentences when it has more than one (a single sentence is already scored whole)."""
        found = [sentence for paragraph in paragraphs(text) for sentence in sentences(paragraph)]
        return found if len(found) > 1 else []

    async def moderate(self, principal: Principal, texts: list[str]) -> list[dict[str, Any]]:
        """OpenAI moderation results for `texts`: each category flagged at the caller's role's threshold,
        personal data flagged when found; nothing is blocked or recorded (the caller asked for a judgement)."""
        thresholds = self.settings.thresholds[principal.role]
        results = []
        for report in await self.scan(texts, injection=True):
            scores = report["scores"]
            categories = {CATEGORY_NAMES[c]: scores[c] >= thresholds[c] for c in thresholds}
            categories[CATEGORY_NAMES["pii"]] = bool(report["pii"])
            results.append({
                "flagged": any(categories.values()),
                "categories": categories,
                "category_scores": {CATEGORY_NAMES[c]: round(float(v), 4) for c, v in scores.items()},
            })
        return results

    def verdict(self, role: str, report: dict[str, Any]) -> tuple[str, float] | None:
        """The most severe category over the role's threshold, if any."""
        thresholds = {**self.settings.thresholds.get(role, self.settings.thresholds["student"]), "blocked_term": 1.0}
        over = [(category, report["scores"][category]) for category, limit in thresholds.items()
                if report["scores"].get(category, 0.0) >= limit]
        return max(over, key=lambda item: item[1]) if over else None

    def block_message(self, category: str, direction: str) -> str:
        if category == "self_harm":
            return self.settings.self_harm_message
        what = "message" if direction == "input" else "answer"
        return f"this {what} was blocked by the safety policy ({CATEGORY_NAMES.get(category, category)})"

    async def blocked(self, principal: Principal, direction: str, report: dict[str, Any]) -> str | None:
        """The category that blocks this report for the caller's role, recorded as a safety event; None when it
        passes. An answer is never blocked for prompt injection (that is about what a user sends)."""
        verdict = self.verdict(principal.role, report)
        if verdict is None or (direction == "output" and verdict[0] == "prompt_injection"):
            return None
        category, score = verdict
        await self.record(principal, direction, category, score, "blocked", report["redacted"])
        return category

    def redacts_pii(self, report: dict[str, Any]) -> bool:
        """Personal data found, and the policy does something about it (redact or block)."""
        return bool(report["pii"]) and self.settings.pii_action != "allow"

    async def record(self, principal: Principal | None, direction: str, category: str, score: float | None,
                     action: str, excerpt: str) -> None:
        """A row in safety_events (and the Serve metric); never lets a storage failure hide the block itself."""
        metrics.record_safety_event(direction, category, action)
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    "INSERT INTO safety_events (request_id, user_id, direction, category, score, action, excerpt)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    request_trace.request_id(), uuid.UUID(principal.user_id) if principal else None, direction,
                    category, score, action, excerpt[:300],
                )
        except EduserveError:
            logger.error("could not record safety event (%s %s %s)", direction, category, action)

    async def check_input(self, principal: Principal, text: str) -> str:
        """The text to use (personal data redacted per policy), or ContentBlocked."""
        return (await self.check_inputs(principal, [text]))[0]

    async def check_inputs(self, principal: Principal, texts: list[str]) -> list[str]:
        """Each text to use, in one call to the Safety deployment; the first block raises ContentBlocked."""
        if not self.settings.enabled or not texts:
            return texts
        reports = await self.scan(texts, injection=True)
        return [await self._decide_input(principal, text, report) for text, report in zip(texts, reports, strict=True)]

    async def _decide_input(self, principal: Principal, text: str, report: dict[str, Any]) -> str:
        category = await self.blocked(principal, "input", report)
        if category is not None:
            raise ContentBlocked(category, self.block_message(category, "input"))
        if self.redacts_pii(report):
            if self.settings.pii_action == "block":
                await self.record(principal, "input", "pii", 1.0, "blocked", report["redacted"])
                raise ContentBlocked("pii", "remove the personal data (email, phone, card, address) and try again")
            await self.record(principal, "input", "pii", 1.0, "redacted", report["redacted"])
            return report["redacted"]
        return text

    async def check_output(self, principal: Principal, text: str, rewrite: bool = True) -> tuple[str, str | None]:
        """A whole answer: (text to show, blocked category or None), in one call to the Safety deployment.
        With `rewrite` False (an answer that must keep a format: JSON, a tool call), nothing is redacted in it;
        a block still applies."""
        if not self.settings.enabled or not text.strip():
            return text, None
        (report,) = await self.scan([text], injection=False)
        category = await self.blocked(principal, "output", report)
        if category is not None:
            return "", category
        if rewrite and self.redacts_pii(report):
            return report["redacted"], None
        return text, None

    def output_guard(self, principal: Principal, rewrite: bool = True) -> OutputGuard:
        return OutputGuard(self, principal, rewrite)

    async def check_choices(self, principal: Principal, kind: str, answer: dict[str, Any],
                            rewrite: bool = True) -> dict[str, Any]:
        """A whole OpenAI answer with each choice's text checked: redacted where needed (unless `rewrite` is False,
        for answers constrained to a format), emptied with `finish_reason: content_filter` where blocked (as
        OpenAI marks filtered choices)."""
        texts = []  # (choice, the dict holding its text, that text's key), for the choices that have text
        for choice in answer.get("choices", []):
            holder, key = (choice.get("message") or {}, "content") if kind == "chat" else (choice, "text")
            if holder.get(key):
                texts.append((choice, holder, key))
        checks = await asyncio.gather(*(self.check_output(principal, holder[key], rewrite) for _, holder, key in texts))
        for (choice, holder, key), (checked, blocked) in zip(texts, checks, strict=True):
            holder[key] = checked
            if blocked:
                choice["finish_reason"] = "content_filter"
                choice["logprobs"] = None
        return answer

    def choices_guard(self, principal: Principal, kind: str, choices: int, rewrite: bool = True) -> ChoicesGuard:
        return ChoicesGuard(self, principal, kind, choices, rewrite)


class OutputGuard:
    """Holds streamed text back until it has been checked: released in groups of a few words (or at a sentence
    end), each checked together with the unreleased rest of its sentence and the previous sentence."""

    def __init__(self, service: SafetyService, principal: Principal, rewrite: bool = True):
        self.service = service
        self.principal = principal
        self.rewrite = rewrite  # False: checked, never redacted (a JSON answer must stay JSON)
        self.pending = ""
        self.released = ""

    async def stream(self, items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """A model stream ({"delta"} items, then the {"finish_reason"} one) with its text released only once
        checked; raises ContentBlocked where the check fails (the caller closes the model's stream)."""
        async for item in items:
            if "delta" in item:
                released = await self.feed(item["delta"])
                if released:
                    yield {"delta": released}
            elif "finish_reason" in item:
                released = await self.finish()
                if released:
                    yield {"delta": released}
                yield item

    async def feed(self, delta: str) -> str:
        self.pending += delta
        if not self.service.settings.enabled:
            return self._release(self.pending)
        words = len(self.pending.split())
        if words > self.service.settings.output_release_words or SENTENCE_END.search(self.pending):
            return await self._check_and_release()
        return ""

    async def finish(self) -> str:
        if not self.pending:
            return ""
        if not self.service.settings.enabled:
            return self._release(self.pending)
        return await self._check_and_release()

    def _context(self) -> str:
        previous = sentences(self.released)
        return (previous[-1] + " " if previous else "") + self.pending

    async def _check_and_release(self) -> str:
        window = self._context()
        (report,) = await self.service.scan([window], injection=False)
        category = await self.service.blocked(self.principal, "output", report)
        if category is not None:
            self.pending = ""
            raise ContentBlocked(category, self.service.block_message(category, "output"))
        text = self.pending
        if self.rewrite and self.service.redacts_pii(report):
            # Redact in the pending part only; spans are relative to the window, so scan the part itself.
            (own,) = await self.service.scan([text], injection=False)
            text = own["redacted"]
        return self._release(text)

    def _release(self, text: str) -> str:
        self.pending = ""
        self.released += text
        return text


class ChoicesGuard:
    """Output safety for an OpenAI stream of any number of choices. Each choice's text (`delta.content` of chat
    chunks, `text` of completion chunks) goes through an OutputGuard of its own; what came with the text (logprobs)
    is released with it, other fields (role, tool calls) pass at once; a blocked choice ends there with
    `finish_reason: content_filter` while the others go on; when every choice is blocked the stream ends (and
    the caller closes the engine's)."""

    def __init__(self, service: SafetyService, principal: Principal, kind: str, choices: int, rewrite: bool = True):
        self.service = service
        self.principal = principal
        self.chat = kind == "chat"
        self.choices = choices
        self.rewrite = rewrite
        self.guards: dict[int, OutputGuard] = {}
        self.logprobs: dict[int, dict[str, Any]] = {}
        self.blocked: set[int] = set()

    async def stream(self, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for chunk in chunks:
            if not chunk.get("choices"):  # the usage chunk, or an in-band error
                yield chunk
                continue
            released = [out for choice in chunk["choices"] if (out := await self._choice(choice)) is not None]
            if released:
                yield {**chunk, "choices": released}
            if len(self.blocked) >= self.choices:
                return

    async def _choice(self, choice: dict[str, Any]) -> dict[str, Any] | None:
        index = choice.get("index", 0)
        if index in self.blocked:
            return None
        guard = self.guards.setdefault(index, OutputGuard(self.service, self.principal, self.rewrite))
        delta = dict(choice.get("delta") or {}) if self.chat else {}
        text = (delta.pop("content", None) if self.chat else choice.get("text")) or ""
        self._hold_logprobs(index, choice.get("logprobs"))
        try:
            released = await guard.feed(text) if text else ""
            if choice.get("finish_reason"):
                released += await guard.finish()
        except ContentBlocked:
            self.blocked.add(index)
            self.logprobs.pop(index, None)
            return self._shape(choice, {}, "", None, "content_filter")
        if not released and not delta and not choice.get("finish_reason"):
            return None  # held back until checked
        logprobs = self.logprobs.pop(index, None) if released or choice.get("finish_reason") else None
        return self._shape(choice, delta, released, logprobs, choice.get("finish_reason"))

    def _hold_logprobs(self, index: int, logprobs: dict[str, Any] | None) -> None:
        """Logprobs arrive per token; they are kept until their text is released (lists are concatenated)."""
        if not logprobs:
            return
        held = self.logprobs.setdefault(index, {})
        for key, value in logprobs.items():
            held[key] = (held.get(key) or []) + value if isinstance(value, list) else value

    def _shape(self, choice: dict[str, Any], delta: dict[str, Any], text: str, logprobs: Any,
               finish_reason: str | None) -> dict[str, Any]:
        out = {**choice, "logprobs": logprobs, "finish_reason": finish_reason}
        if self.chat:
            out["delta"] = {**delta, "content": text} if text else delta
        else:
            out["text"] = text
        return out
