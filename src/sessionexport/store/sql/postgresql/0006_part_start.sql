-- Start time of the last completed part of a session: a next part must start later (the session
-- log is unique on tenant, session id and start time), even when a burst of actions shares one
-- millisecond across the split.
ALTER TABLE open_sessions ADD COLUMN last_start BIGINT;
