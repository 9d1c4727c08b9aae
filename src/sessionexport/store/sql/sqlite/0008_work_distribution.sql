-- Work distribution over several workers sharing this database (see the PostgreSQL migration;
-- here one process writes at a time, so leases are trivially kept, with the same statements).
--
-- An export's log is split into `shards` (the sessions whose seq % shards = shard), each with a
-- cursor row of its own; an export of one shard (the default) has one row, as before. SQLite
-- cannot change a primary key in place: the table is made anew, columns in the same order.
CREATE TABLE export_cursors_by_shard (
    export_id        TEXT    NOT NULL,
    position         INTEGER NOT NULL,
    last_success_at  INTEGER,
    last_error_at    INTEGER,
    last_error       TEXT,
    delivered        INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER NOT NULL,
    failed           INTEGER NOT NULL DEFAULT 0,
    retried          INTEGER NOT NULL DEFAULT 0,
    shard            INTEGER NOT NULL DEFAULT 0,
    shards           INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (export_id, shard)
);
INSERT INTO export_cursors_by_shard
    (export_id, position, last_success_at, last_error_at, last_error, delivered, updated_at, failed, retried)
SELECT export_id, position, last_success_at, last_error_at, last_error, delivered, updated_at, failed, retried
  FROM export_cursors;
DROP TABLE export_cursors;
ALTER TABLE export_cursors_by_shard RENAME TO export_cursors;

-- Who exports a shard, until when (epoch ms by the database's clock).
CREATE TABLE export_leases (
    export_id   TEXT    NOT NULL,
    shard       INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (export_id, shard)
);

-- The live workers (renewed with their leases), so that each takes a fair share of the shards.
CREATE TABLE export_workers (
    owner       TEXT    PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
