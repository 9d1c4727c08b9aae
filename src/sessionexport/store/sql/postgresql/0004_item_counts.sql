-- Exact per-session counts of an export beside `delivered`: sessions dead-lettered (whole bulks or
-- single documents Elasticsearch rejected) and items sent again after a 429 / 5xx item answer.
ALTER TABLE export_cursors ADD COLUMN failed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE export_cursors ADD COLUMN retried BIGINT NOT NULL DEFAULT 0;
