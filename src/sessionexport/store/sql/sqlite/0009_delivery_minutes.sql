-- Sessions delivered and failed per export and minute, for the UI's chart of the last hour
-- (rows older than a day are pruned as bulks are recorded).
CREATE TABLE delivery_minutes (
    export_id  TEXT    NOT NULL,
    minute     INTEGER NOT NULL,  -- epoch ms, floored to the minute
    delivered  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (export_id, minute)
) WITHOUT ROWID;

-- Searching sessions by user id (UI and API).
CREATE INDEX sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
