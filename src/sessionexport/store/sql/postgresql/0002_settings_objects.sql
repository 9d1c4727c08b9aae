-- Settings 2.0 objects (export configurations, management zones). ``value`` is the object's JSON
-- with every secret encrypted; ``version`` grows on every write and makes the updateToken.
CREATE TABLE settings_objects (
    object_id      TEXT   PRIMARY KEY,
    schema_id      TEXT   NOT NULL,
    scope          TEXT   NOT NULL,
    external_id    TEXT,
    value          TEXT   NOT NULL,  -- JSON text, returned exactly as written
    schema_version TEXT   NOT NULL,
    created        BIGINT NOT NULL,
    modified       BIGINT NOT NULL,
    created_by     TEXT   NOT NULL,
    modified_by    TEXT   NOT NULL,
    version        BIGINT NOT NULL,
    UNIQUE (schema_id, external_id)
);
CREATE INDEX settings_objects_by_schema ON settings_objects (schema_id, created, object_id);
