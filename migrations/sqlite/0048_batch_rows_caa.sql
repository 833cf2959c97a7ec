-- A failed batch row (refused at issuance: CAA, a validation past its reuse period, five
-- failed attempts) issued nothing: its client row id is free again, so the organisation
-- resubmits the row as it is once the cause is fixed.
DROP INDEX batch_rows_client;
CREATE UNIQUE INDEX batch_rows_client ON batch_rows (organisation_id, client_row_id)
    WHERE state NOT IN ('invalid', 'duplicate', 'failed');
-- A queued row whose mailbox domain's CAA could not be read (or corroborated) waits until
-- caa_retry_at, longer after each try; after a day of tries it fails (ra::bulk::mailbox_caa).
ALTER TABLE batch_rows ADD COLUMN caa_retry_at INTEGER;
ALTER TABLE batch_rows ADD COLUMN caa_tries INTEGER NOT NULL DEFAULT 0;
