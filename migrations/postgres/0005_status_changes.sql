-- See migrations/sqlite/0005_status_changes.sql.
CREATE TABLE status_changes (
    issuer     TEXT PRIMARY KEY NOT NULL,
    changed_at BIGINT NOT NULL
);
