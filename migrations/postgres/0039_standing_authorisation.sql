-- An organisation's standing authorisation (issue 16, docs/BULK.md "Standing authorisation"):
-- granted by two officers where the CA's policy allows it ([ra] standing_authorisation), its
-- batches of at most standing_max_rows good rows are approved on arrival until standing_until.
-- standing_by: the proposal that granted it (named in each approval it makes).
ALTER TABLE organisations ADD COLUMN standing_until BIGINT;
ALTER TABLE organisations ADD COLUMN standing_max_rows BIGINT;
ALTER TABLE organisations ADD COLUMN standing_by TEXT;
