-- One cursor per export configuration: the highest seq whose fate is decided (delivered,
-- dead-lettered, or filtered out). Delivery is at-least-once: it moves only after a decision.
CREATE TABLE export_cursors (
    export_id        TEXT    PRIMARY KEY,
    position         INTEGER NOT NULL,
    last_success_at  INTEGER,
    last_error_at    INTEGER,
    last_error       TEXT,
    delivered        INTEGER NOT NULL DEFAULT 0,  -- sessions delivered, all time
    updated_at       INTEGER NOT NULL
);

-- Bulks that failed every attempt: kept whole, to be replayed (never silently discarded).
CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    export_id     TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    first_seq     INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,
    session_count INTEGER NOT NULL,
    sessions      TEXT    NOT NULL,  -- JSON: [[tenantId, userSessionId, startTime], ...]
    content_type  TEXT    NOT NULL,
    body          BLOB    NOT NULL,  -- the exact request body
    reason        TEXT    NOT NULL,
    attempts      TEXT    NOT NULL,  -- JSON: every attempt's status, error and duration
    state         TEXT    NOT NULL DEFAULT 'pending',  -- pending | replayed
    replayed_at   INTEGER
);
CREATE INDEX dead_letters_by_export ON dead_letters (export_id, state, id);

-- Alerts: one open alert per (export, kind) at most; closed when deliveries succeed again.
CREATE TABLE alerts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    export_id     TEXT    NOT NULL,
    kind          TEXT    NOT NULL,  -- delivery | token
    title         TEXT    NOT NULL,  -- e.g. "Request timeout", "Request failed: ..."
    message       TEXT    NOT NULL,
    opened_at     INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    occurrences   INTEGER NOT NULL DEFAULT 1,
    closed_at     INTEGER
);
CREATE INDEX alerts_open ON alerts (export_id, kind, closed_at);
