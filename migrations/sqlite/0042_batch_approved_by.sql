-- Who approved a batch (a two-officer proposal's confirming officer, or
-- `standing-authorisation:<proposal>`): a standing authorisation approves at most its
-- max_rows rows in any 24 hours (issue 16; docs/BULK.md "Standing authorisation").
ALTER TABLE batches ADD COLUMN approved_by TEXT;
