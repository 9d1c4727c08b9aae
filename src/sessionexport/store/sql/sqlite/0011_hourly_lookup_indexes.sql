-- Lookups by userSessionId and by userId go through indexes that lead with the hour in which the
-- session joined the log. New sessions then land in the newest hour's few index pages; in one
-- index over the whole log they landed anywhere, and once it held a million sessions every
-- session written rewrote whole pages of it (44 KB written per 8 KB session, instead of 17).
-- A lookup probes each hour present in the log (store/sqlite.py, recent_sessions).
DROP INDEX sessions_by_user_session_id;
DROP INDEX sessions_user_id;
CREATE INDEX sessions_by_hour_and_user_session_id ON sessions (received_at / 3600000, user_session_id);
CREATE INDEX sessions_by_hour_and_user_id ON sessions (received_at / 3600000, user_id)
    WHERE user_id IS NOT NULL;
