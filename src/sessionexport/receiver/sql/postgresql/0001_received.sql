-- Every request that passed authentication: stored ones with their counts, refused ones with the reason.
CREATE TABLE requests (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at BIGINT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    client TEXT NOT NULL,
    principal TEXT,
    status INTEGER NOT NULL,
    documents INTEGER NOT NULL DEFAULT 0,
    stored INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    error TEXT
);

-- Received documents, one row per identity: kind 'session', 'legacy' or 'document' (Elasticsearch).
CREATE TABLE documents (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES requests (id),
    received_at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    user_session_id TEXT,
    index_name TEXT,
    body BYTEA NOT NULL,
    UNIQUE (kind, key)
);
CREATE INDEX documents_by_session ON documents (user_session_id);
CREATE INDEX documents_by_request ON documents (request_id);
