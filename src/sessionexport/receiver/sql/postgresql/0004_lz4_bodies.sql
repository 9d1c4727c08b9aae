-- Bodies of received documents are compressed with lz4 rather than PostgreSQL's default pglz
-- (values from now on; those stored stay as they are): for sessions of 8 KB, it takes the server
-- about half the CPU to store one, and less to read it back, with bodies still compressed on disk.
-- A server built without lz4 (or older than 14) keeps pglz: the version is applied all the same.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE documents ALTER COLUMN body SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'bodies stay compressed with pglz: %', SQLERRM;
END
$$;
