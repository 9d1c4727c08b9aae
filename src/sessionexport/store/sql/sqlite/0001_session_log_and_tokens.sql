-- The session log: every completed session once, in arrival order.
-- AUTOINCREMENT: a seq is never reused, even after retention purged the newest rows, so that
-- export cursors (which store a seq) can never skip or repeat a session.
CREATE TABLE sessions (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT    NOT NULL,
    user_session_id  TEXT    NOT NULL,
    start_time       INTEGER NOT NULL,
    end_time         INTEGER,
    received_at      INTEGER NOT NULL,  -- epoch ms when the session joined the log
    user_id          TEXT,
    user_type        TEXT,
    application_type TEXT,
    country          TEXT,
    applications     TEXT    NOT NULL,  -- JSON array: names and ids of the applications of its actions
    size             INTEGER NOT NULL,
    body             BLOB    NOT NULL,  -- the session's compact JSON, exactly as it will be exported
    UNIQUE (tenant_id, user_session_id, start_time)
);
CREATE INDEX sessions_by_user_session_id ON sessions (user_session_id, seq);
CREATE INDEX sessions_by_received_at ON sessions (received_at);

CREATE TABLE api_tokens (
    id           TEXT    PRIMARY KEY,  -- the token's public part
    name         TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,     -- comma-separated
    secret_hash  BLOB    NOT NULL,     -- sha256 of the whole token; the token itself is never stored
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);
