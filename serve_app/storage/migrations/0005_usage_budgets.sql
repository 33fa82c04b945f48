-- Usage, aggregated per minute: one row per (minute, user, API key, role, model, kind), added to by every
-- ingress replica's buffered meter (an upsert per flush). api_key is '' for a signed-in user's own token.
-- No foreign keys: usage is an accounting record; deleting a user deletes its rows explicitly.
CREATE TABLE usage_minutes (
    minute            timestamptz NOT NULL,
    user_id           uuid NOT NULL,
    api_key           text NOT NULL DEFAULT '',
    role              text NOT NULL,
    model             text NOT NULL,
    kind              text NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    documents         bigint NOT NULL DEFAULT 0,
    audio_seconds     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, minute, api_key, role, model, kind)
);
CREATE INDEX usage_minutes_minute ON usage_minutes (minute);
CREATE INDEX usage_minutes_api_key ON usage_minutes (api_key, minute) WHERE api_key <> '';

-- Token budgets (prompt + completion tokens): per API key, per user, and per course collection, where the
-- course's budget applies to each enrolled student. NULL: no limit for that period.
CREATE TABLE token_budgets (
    scope      text NOT NULL CHECK (scope IN ('api_key', 'user', 'collection')),
    subject_id uuid NOT NULL,
    per_minute bigint CHECK (per_minute > 0),
    per_day    bigint CHECK (per_day > 0),
    per_month  bigint CHECK (per_month > 0),
    set_by     uuid,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, subject_id)
);
