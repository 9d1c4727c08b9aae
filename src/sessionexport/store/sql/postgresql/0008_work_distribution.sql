-- Work distribution over several workers sharing this database.
--
-- An export's log is split into `shards` (the sessions whose seq % shards = shard), each with a
-- cursor row of its own; an export of one shard (the default) has one row, as before.
ALTER TABLE export_cursors ADD COLUMN shard INTEGER NOT NULL DEFAULT 0;
ALTER TABLE export_cursors ADD COLUMN shards INTEGER NOT NULL DEFAULT 1;
ALTER TABLE export_cursors DROP CONSTRAINT export_cursors_pkey;
ALTER TABLE export_cursors ADD PRIMARY KEY (export_id, shard);

-- Who exports a shard, until when (epoch ms by the database's clock). A worker renews its
-- leases every third of their length; a lease that expired may be taken by any worker.
CREATE TABLE export_leases (
    export_id   TEXT    NOT NULL,
    shard       INTEGER NOT NULL,
    owner       TEXT    NOT NULL,
    expires_at  BIGINT  NOT NULL,
    PRIMARY KEY (export_id, shard)
);

-- The live workers (renewed with their leases), so that each takes a fair share of the shards.
CREATE TABLE export_workers (
    owner       TEXT    PRIMARY KEY,
    expires_at  BIGINT  NOT NULL
);
