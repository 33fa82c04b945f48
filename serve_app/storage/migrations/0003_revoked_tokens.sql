-- Signed-out access tokens (their jti), kept until they would have expired: the durable record of a logout.
-- Redis only caches it; authentication reads it with the user's role, in the same query.
CREATE TABLE revoked_tokens (
    jti         text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
