-- PostgreSQL twin of migrations/sqlite/0007_crl_partitions.sql.
-- Partitioned CRLs (docs/REVOCATION.md; TLS BR §7.2.2.1). crl_partition: the partition a
-- certificate was assigned at reservation (its CRL distribution point names it); NULL for
-- certificates whose CDP names the full CRL.
ALTER TABLE certificates ADD COLUMN crl_partition INTEGER;
-- Which CRL of its CA a row of `crls` is: -1 the full CRL, k >= 0 partition k. CRLNumbers come
-- from the CA's one sequence, so they increase across all of its CRLs.
ALTER TABLE crls ADD COLUMN partition_no BIGINT NOT NULL DEFAULT -1;
CREATE INDEX crls_scope ON crls (issuer, partition_no, number);
-- Serials whose CRL entry changed (revoked, held, released, abandoned), queued in the same
-- transaction as the change, so the publisher updates its in-memory entries without rereading
-- every revoked certificate. version counts changes, as in ocsp_pending.
CREATE TABLE crl_pending (
    serial  TEXT PRIMARY KEY NOT NULL,
    issuer  TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX crl_pending_issuer ON crl_pending (issuer);
-- The first load of a CA's entries reads only its CRL candidates.
CREATE INDEX certificates_crl ON certificates (issuer, serial)
    WHERE revocation_reason IS NOT NULL OR state = 'abandoned';
-- The newest CRL of each scope, kept by the publisher in the transaction that stores it: what
-- every serving instance polls (a few rows, however many CRLs were published).
CREATE TABLE crl_latest (
    issuer         TEXT NOT NULL,
    partition_no   BIGINT NOT NULL,
    number         BIGINT NOT NULL,
    this_update    BIGINT NOT NULL,
    next_update    BIGINT NOT NULL,
    status_version BIGINT NOT NULL,
    PRIMARY KEY (issuer, partition_no)
);
INSERT INTO crl_latest (issuer, partition_no, number, this_update, next_update, status_version)
    SELECT c.issuer, c.partition_no, c.number, c.this_update, c.next_update, c.status_version
    FROM crls c JOIN (SELECT issuer, MAX(number) AS number FROM crls GROUP BY issuer) m
    ON c.issuer = m.issuer AND c.number = m.number;
