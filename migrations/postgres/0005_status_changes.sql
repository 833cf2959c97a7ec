-- See migrations/sqlite/0005_status_changes.sql.
CREATE TABLE status_changes (
    issuer  TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
);
ALTER TABLE crls ADD COLUMN status_version BIGINT NOT NULL DEFAULT 0;
