-- Revocation of an issuing CA's certificate by the root (`ecert ca revoke`, a ceremony step):
-- listed in the root's CRL (ARL) with its reason (TLS BR §7.2.2: a reasonCode is required for
-- CA certificates). A revoked CA issues nothing more.
ALTER TABLE cas ADD COLUMN revoked_at INTEGER;
ALTER TABLE cas ADD COLUMN revocation_reason INTEGER;
