-- How far behind the server's clock an open session's device stamps its events: the least, over
-- the events that came in, of (server time at arrival - the event's timestamp), never below 0.
-- A device sending live is behind by its clock's offset; the sessionizer reads inactivity in the
-- device's own time with it (a clock an hour behind no longer looks an hour idle). NULL: not known.
ALTER TABLE open_sessions ADD COLUMN clock_lag INTEGER;
