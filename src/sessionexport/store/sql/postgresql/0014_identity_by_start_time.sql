-- The identity's unique index leads with startTime: (start_time, tenant_id, user_session_id).
-- Sessions arrive soon after they end, so new ones land in the index's newest pages, which stay
-- in memory; led by tenant_id and user_session_id, they landed anywhere, and each leaf page they
-- touched first after a checkpoint went whole into the WAL. Same uniqueness, the columns in
-- another order; ON CONFLICT names them in any order.
CREATE UNIQUE INDEX sessions_identity ON sessions (start_time, tenant_id, user_session_id);
ALTER TABLE sessions DROP CONSTRAINT sessions_tenant_id_user_session_id_start_time_key;
