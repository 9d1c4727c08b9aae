-- Events an open session holds now (kept, not yet in a completed part): what add_events limits,
-- so that a session that never completes (events without user actions, sent for hours) cannot
-- grow without bound. Counted once for the sessions open at the upgrade.
ALTER TABLE open_sessions ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
UPDATE open_sessions SET held = (
    SELECT count(*) FROM rum_events e
     WHERE e.tenant_id = open_sessions.tenant_id AND e.session_id = open_sessions.session_id
);
