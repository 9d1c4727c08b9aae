-- Parts completed under an open session's id before its current session began: the sessions that
-- ended there (an end, an inactivity gap) are numbered on their own, so the current session's
-- parts are numbered from part - parts_before + 1, not on from an earlier session's.
ALTER TABLE open_sessions ADD COLUMN parts_before BIGINT NOT NULL DEFAULT 0;
