-- Revocation status: see migrations/sqlite/0003_revocation.sql.
ALTER TABLE certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_reason BIGINT;
CREATE INDEX certificates_revoked ON certificates (issuer, revocation_reason);
