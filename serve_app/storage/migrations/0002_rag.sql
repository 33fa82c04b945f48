-- Retrieval: chunks carry their collection (filtered vector search without a join), ingest jobs report progress.
ALTER TABLE chunks ADD COLUMN collection_id uuid REFERENCES collections (id) ON DELETE CASCADE;
UPDATE chunks SET collection_id = d.collection_id FROM documents d WHERE d.id = chunks.document_id;
ALTER TABLE chunks ALTER COLUMN collection_id SET NOT NULL;
CREATE INDEX chunks_collection ON chunks (collection_id);
CREATE INDEX documents_collection ON documents (collection_id, created_at DESC);

CREATE TABLE ingest_jobs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    collection_id     uuid NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    total_documents   integer NOT NULL,
    done_documents    integer NOT NULL DEFAULT 0,
    failed_documents  integer NOT NULL DEFAULT 0,
    chunks            integer NOT NULL DEFAULT 0,
    results           jsonb NOT NULL DEFAULT '[]'::jsonb,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
