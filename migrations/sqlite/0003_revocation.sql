-- Revocation status (RFC 5280 §5.3.1 reason codes). NULL reason: not revoked. 6
-- (certificateHold): on hold, may be released. Any other code: revoked for good; the only change
-- allowed afterwards is to keyCompromise (1).
ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_reason INTEGER;
CREATE INDEX certificates_revoked ON certificates (issuer, revocation_reason);
