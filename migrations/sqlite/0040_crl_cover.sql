-- The first full CRL after a start reads every entry of a CA (issue 16: a million in at most
-- 2 s). A covering index of exactly what that read needs, so it scans the index alone instead of
-- fetching each certificate's row (with its DER) from the table.
CREATE INDEX certificates_crl_cover ON certificates (issuer, not_after, serial, revocation_reason, revoked_at, updated_at, crl_partition, profile)
    WHERE revocation_reason IS NOT NULL OR state = 'abandoned';
