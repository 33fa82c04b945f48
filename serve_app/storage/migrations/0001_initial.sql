-- Initial schema. {embedding_dimensions} is filled from settings.storage.embedding_dimensions when the
-- database is created; eduserve_meta remembers it so a profile with another embedder is refused.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE eduserve_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO eduserve_meta (key, value) VALUES ('embedding_dimensions', '{embedding_dimensions}');

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'teacher', 'admin')),
    display_name  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Refresh tokens rotate: each use marks the row used and issues a new one in the same family.
-- Presenting a used token again revokes the whole family (it was stolen or replayed).
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  text NOT NULL UNIQUE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    replaced_by uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    user_agent  text
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    prefix       text NOT NULL UNIQUE,
    key_hash     text NOT NULL,
    role         text NOT NULL CHECK (role IN ('student', 'teacher', 'admin')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE chat_sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title      text NOT NULL DEFAULT '',
    retrieval  boolean NOT NULL DEFAULT false,
    settings   jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_sessions_user ON chat_sessions (user_id, updated_at DESC);

CREATE TABLE chat_messages (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id  uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content     text NOT NULL,
    status      text NOT NULL DEFAULT 'completed'
                CHECK (status IN ('pending', 'completed', 'interrupted', 'blocked', 'error')),
    token_count integer,
    metadata    jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX chat_messages_session ON chat_messages (session_id, created_at);

CREATE TABLE collections (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('course', 'private')),
    owner_id   uuid REFERENCES users (id) ON DELETE CASCADE,
    version    bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE collection_members (
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (collection_id, user_id)
);

CREATE TABLE documents (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    collection_id uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    title         text NOT NULL,
    source        text,
    mime_type     text NOT NULL DEFAULT 'text/plain',
    content_hash  text NOT NULL,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    metadata      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (collection_id, content_hash)
);

CREATE TABLE chunks (
    id          bigserial PRIMARY KEY,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    heading     text,
    content     text NOT NULL,
    token_count integer NOT NULL,
    embedding   vector({embedding_dimensions}) NOT NULL,
    tsv         tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(heading, '') || ' ' || content)) STORED,
    UNIQUE (document_id, position)
);
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);

CREATE TABLE student_profiles (
    user_id            uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    reading_level      text,
    preferred_language text,
    voice              text,
    interests          text[] NOT NULL DEFAULT '{{}}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE learning_events (
    id         bigserial PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    payload    jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX learning_events_user ON learning_events (user_id, created_at);

CREATE TABLE safety_events (
    id         bigserial PRIMARY KEY,
    request_id text,
    user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    direction  text NOT NULL CHECK (direction IN ('input', 'output')),
    category   text NOT NULL,
    score      real,
    action     text NOT NULL,
    excerpt    text,
    created_at timestamptz NOT NULL DEFAULT now()
);
