-- The session log: every completed session once, in arrival order.
-- An identity column draws from a sequence, which never hands out a value twice (even after
-- retention purged the newest rows), so export cursors (which store a seq) never repeat a session.
-- Gaps are normal: a rolled-back append or a duplicate skipped by ON CONFLICT uses up its number.
-- Times are epoch milliseconds (BIGINT). JSON is kept as TEXT, as SQLite keeps it: the text comes
-- back byte for byte, and TEXT accepts the \u0000 escape that JSONB refuses.
CREATE TABLE sessions (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT   NOT NULL,
    user_session_id  TEXT   NOT NULL,
    start_time       BIGINT NOT NULL,
    end_time         BIGINT,
    received_at      BIGINT NOT NULL,  -- epoch ms when the session joined the log
    user_id          TEXT,
    user_type        TEXT,
    application_type TEXT,
    country          TEXT,
    applications     TEXT   NOT NULL,  -- JSON array: names and ids of the applications of its actions
    size             BIGINT NOT NULL,
    body             BYTEA  NOT NULL,  -- the session's compact JSON, exactly as it will be exported
    UNIQUE (tenant_id, user_session_id, start_time)
);
CREATE INDEX sessions_by_user_session_id ON sessions (user_session_id, seq);
CREATE INDEX sessions_by_received_at ON sessions (received_at);

CREATE TABLE api_tokens (
    id           TEXT   PRIMARY KEY,  -- the token's public part
    name         TEXT   NOT NULL,
    scopes       TEXT   NOT NULL,     -- comma-separated
    secret_hash  BYTEA  NOT NULL,     -- sha256 of the whole token; the token itself is never stored
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
