-- Events accepted for a session so far: the sessionizer completes a part only if none arrived
-- between reading the session and writing the part (else it looks again, with them).
ALTER TABLE open_sessions ADD COLUMN arrivals BIGINT NOT NULL DEFAULT 0;
