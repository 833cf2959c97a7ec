-- Partitioned CRLs (docs/REVOCATION.md; TLS BR §7.2.2.1). crl_partition: the partition a
-- certificate was assigned at reservation (its CRL distribution point names it); NULL for
-- certificates whose CDP names the full CRL.
ALTER TABLE certificates ADD COLUMN crl_partition INTEGER;
-- Which CRL of its CA a row of `crls` is: -1 the full CRL, k >= 0 partition k. CRLNumbers come
-- from the CA's one sequence, so they increase across all of its CRLs.
ALTER TABLE crls ADD COLUMN partition_no INTEGER NOT NULL DEFAULT -1;
CREATE INDEX crls_scope ON crls (issuer, partition_no, number);
-- Serials whose CRL entry changed (revoked, held, released, abandoned), queued in the same
-- transaction as the change, so the publisher updates its in-memory entries without rereading
-- every revoked certificate. version counts changes, as in ocsp_pending.
CREATE TABLE crl_pending (
    serial  TEXT PRIMARY KEY NOT NULL,
    issuer  TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX crl_pending_issuer ON crl_pending (issuer);
-- The first load of a CA's entries reads only its CRL candidates.
CREATE INDEX certificates_crl ON certificates (issuer, serial)
    WHERE revocation_reason IS NOT NULL OR state = 'abandoned';
