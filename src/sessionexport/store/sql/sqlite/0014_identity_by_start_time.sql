-- The identity's unique index leads with startTime: (start_time, tenant_id, user_session_id).
-- Sessions arrive soon after they end, so new ones land in the index's few newest pages. Led by
-- tenant_id and user_session_id, they landed anywhere, and each append rewrote whole 64 KB pages
-- of it: with a million sessions in the log, ingest took 1.8 times as long for 8 KB sessions and
-- 2.9 times for 2 KB ones (bench/ingest.py --stored 1000000). Same uniqueness, the columns in
-- another order (ON CONFLICT names them in any order).
-- A UNIQUE clause of CREATE TABLE cannot be dropped: the log is copied into a table without it,
-- once (2 GB took 16 s on a small machine), and the file keeps the old table's space for the
-- sessions that follow.
CREATE TABLE sessions_new (
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
    body             BLOB    NOT NULL   -- the session's compact JSON, exactly as it will be exported
);
INSERT INTO sessions_new
    SELECT seq, tenant_id, user_session_id, start_time, end_time, received_at, user_id, user_type,
           application_type, country, applications, size, body
    FROM sessions ORDER BY seq;
-- AUTOINCREMENT's high-water mark carries over, past sessions retention purged: a seq is never reused.
DELETE FROM sqlite_sequence WHERE name = 'sessions_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'sessions_new', seq FROM sqlite_sequence WHERE name = 'sessions';
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
CREATE UNIQUE INDEX sessions_identity ON sessions (start_time, tenant_id, user_session_id);
CREATE INDEX sessions_by_received_at ON sessions (received_at);
CREATE INDEX sessions_by_hour_and_user_session_id ON sessions (received_at / 3600000, user_session_id);
CREATE INDEX sessions_by_hour_and_user_id ON sessions (received_at / 3600000, user_id)
    WHERE user_id IS NOT NULL;
