-- A replay claims a dead letter until this time (epoch ms) before sending it: two replays at once
-- (two clicks, two workers) then send it once, and a crashed replay's claim runs out.
ALTER TABLE dead_letters ADD COLUMN replaying_until BIGINT;
