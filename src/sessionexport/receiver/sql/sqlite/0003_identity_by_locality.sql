-- The unique index of documents orders those of a kind by a number read from the end of their
-- key (``locality``) before the key: for sessions and the documents sessionexport sends to
-- Elasticsearch, the startTime that ends "<tenantId>-<userSessionId>-<startTime>". Documents
-- arrive soon after their session ends, so new ones land in the index's few newest pages. Over
-- (kind, key) they landed anywhere, and each save rewrote whole 64 KB pages of it: with a million documents stored, saving 8 KB sessions
-- took 4.6 times as long as in an empty store. ``locality`` follows from the key (0 when the key
-- does not end in "-<1 to 18 digits>"), so the uniqueness is the same.
-- A UNIQUE clause of CREATE TABLE cannot be dropped: the documents are copied into a table
-- without it, once (2 GB took 18 s on a small machine, with free disk of four times the file
-- meanwhile), and the file keeps the old table's space for the documents that follow.
CREATE TABLE documents_new (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    received_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    locality INTEGER NOT NULL,  -- see receiver/store/sqlite.py, key_locality
    user_session_id TEXT,
    index_name TEXT,
    body BLOB NOT NULL
);
INSERT INTO documents_new
    SELECT seq, request_id, received_at, kind, key,
           CASE WHEN substr(rtrim(key, '0123456789'), -1) = '-'
                     AND length(key) - length(rtrim(key, '0123456789')) BETWEEN 1 AND 18
                     AND instr(key, char(0)) = 0  -- length() stops at a NUL
                THEN CAST(substr(key, length(rtrim(key, '0123456789')) + 1) AS INTEGER)
                ELSE 0 END,
           user_session_id, index_name, body
    FROM documents ORDER BY seq;
-- AUTOINCREMENT's high-water mark carries over: a seq is never reused.
DELETE FROM sqlite_sequence WHERE name = 'documents_new';
INSERT INTO sqlite_sequence (name, seq) SELECT 'documents_new', seq FROM sqlite_sequence WHERE name = 'documents';
DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;
CREATE UNIQUE INDEX documents_identity ON documents (kind, locality, key);
CREATE INDEX documents_by_request ON documents (request_id);
CREATE INDEX documents_by_hour_and_session ON documents (received_at / 3600000, user_session_id);
