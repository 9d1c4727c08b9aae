-- UI login sessions ended by logging out: their cookies are refused until they would have expired
-- anyway (rows past that are pruned as sessions end).
CREATE TABLE ended_ui_sessions (
    id          TEXT    PRIMARY KEY,
    expires_at  INTEGER NOT NULL  -- epoch ms
) WITHOUT ROWID;
