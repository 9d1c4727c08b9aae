-- RUM events of sessions still open, kept until the sessionizer completes them (a restart loses
-- nothing). One row per (tenant, session, event id): a re-sent event is a duplicate.
CREATE TABLE rum_events (
    tenant_id   TEXT   NOT NULL,
    session_id  TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    ts          BIGINT NOT NULL,  -- when it happened (epoch ms)
    kind        TEXT   NOT NULL,  -- attributes | action | event | error | end
    body        BYTEA  NOT NULL,  -- the event as sent
    received_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, session_id, event_id)
);

-- One row per session id: its next part, when to look at it again, and how far it was completed
-- (events at or before `completed_until` arrive too late for their part and are counted as late).
CREATE TABLE open_sessions (
    tenant_id       TEXT    NOT NULL,
    session_id      TEXT    NOT NULL,
    part            INTEGER NOT NULL DEFAULT 0,      -- parts completed so far
    split           BOOLEAN NOT NULL DEFAULT false,  -- true once a limit split the session into parts
    last_arrival    BIGINT  NOT NULL,
    check_at        BIGINT,                          -- null: nothing open
    completed_until BIGINT,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX open_sessions_by_check ON open_sessions (check_at) WHERE check_at IS NOT NULL;
