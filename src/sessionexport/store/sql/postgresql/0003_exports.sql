-- One cursor per export configuration: the highest seq whose fate is decided (delivered,
-- dead-lettered, or filtered out). Delivery is at-least-once: it moves only after a decision.
CREATE TABLE export_cursors (
    export_id        TEXT   PRIMARY KEY,
    position         BIGINT NOT NULL,
    last_success_at  BIGINT,
    last_error_at    BIGINT,
    last_error       TEXT,
    delivered        BIGINT NOT NULL DEFAULT 0,  -- sessions delivered, all time
    updated_at       BIGINT NOT NULL
);

-- Bulks that failed every attempt: kept whole, to be replayed (never silently discarded).
CREATE TABLE dead_letters (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    export_id     TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    first_seq     BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    session_count INTEGER NOT NULL,
    sessions      TEXT   NOT NULL,  -- JSON: [[tenantId, userSessionId, startTime], ...]
    content_type  TEXT   NOT NULL,
    body          BYTEA  NOT NULL,  -- the exact request body
    reason        TEXT   NOT NULL,
    attempts      TEXT   NOT NULL,  -- JSON: every attempt's status, error and duration
    state         TEXT   NOT NULL DEFAULT 'pending',  -- pending | replayed
    replayed_at   BIGINT
);
CREATE INDEX dead_letters_by_export ON dead_letters (export_id, state, id);

-- Alerts: one open alert per (export, kind) at most; closed when deliveries succeed again.
-- SQLite's single writer keeps that rule by itself; here concurrent writers need the unique
-- index, which also lets raising an alert be one atomic upsert.
CREATE TABLE alerts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    export_id     TEXT   NOT NULL,
    kind          TEXT   NOT NULL,  -- delivery | token | retention
    title         TEXT   NOT NULL,  -- e.g. "Request timeout", "Request failed: ..."
    message       TEXT   NOT NULL,
    opened_at     BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    occurrences   BIGINT NOT NULL DEFAULT 1,
    closed_at     BIGINT
);
CREATE UNIQUE INDEX alerts_open ON alerts (export_id, kind) WHERE closed_at IS NULL;
