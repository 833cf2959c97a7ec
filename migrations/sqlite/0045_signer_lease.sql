-- The signer's lease (issue 17): the signing process renews it every second through the
-- connection that holds the PostgreSQL advisory lock (`pid` is that session's backend). A
-- standby that finds the lock held by a session whose lease is stale — the signer's host lost
-- without a word, or the process wedged — ends that session, so the lock is freed in seconds
-- rather than when TCP keepalive gives up (hours). SQLite: unused (the lock is a file lock of
-- one host, freed when its process dies).
CREATE TABLE signer_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL
);
