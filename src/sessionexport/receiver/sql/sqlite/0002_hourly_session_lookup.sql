-- Lookups by userSessionId go through an index that leads with the hour in which the document was
-- received, as the session log's do (store migration 0011): new documents land in the newest
-- hour's few index pages. In one index over every document they landed anywhere, and each save
-- rewrote whole 64 KB pages of it: with a million documents stored, saving 8 KB sessions took
-- 1.7 times as long. A lookup probes each hour present (receiver/store/sqlite.py).
DROP INDEX documents_by_session;
CREATE INDEX documents_by_hour_and_session ON documents (received_at / 3600000, user_session_id);
