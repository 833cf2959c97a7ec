-- OCSP robustness (docs/OCSP.md). seq is unique: two writers can never hand out the same
-- number (store_ocsp also serialises writers); queued_at dates the oldest unsigned change of
-- a serial, so /healthz can fault when changes wait too long.
DROP INDEX ocsp_responses_seq;
CREATE UNIQUE INDEX ocsp_responses_seq ON ocsp_responses (seq);
ALTER TABLE ocsp_pending ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
UPDATE ocsp_pending SET queued_at = CAST(strftime('%s', 'now') AS INTEGER);
