-- A failed batch row (refused at issuance: CAA, a validation past its reuse period, five
-- failed attempts) issued nothing: its client row id is free again, so the organisation
-- resubmits the row as it is once the cause is fixed.
DROP INDEX batch_rows_client;
CREATE UNIQUE INDEX batch_rows_client ON batch_rows (organisation_id, client_row_id)
    WHERE state NOT IN ('invalid', 'duplicate', 'failed');
