-- Separation of duties (issue 14): the operator, auditor and data_owner roles join clerk,
-- supervisor, officer and admin (ca_core::ra::permissions). SQLite cannot change a CHECK
-- constraint in place: the column is renamed (its check goes with it), a new one with the new
-- check takes its values, and the old one is dropped.
ALTER TABLE staff RENAME COLUMN role TO role_v1;
ALTER TABLE staff ADD COLUMN role TEXT NOT NULL DEFAULT 'clerk'
    CHECK (role IN ('clerk', 'supervisor', 'officer', 'admin', 'operator', 'auditor', 'data_owner'));
UPDATE staff SET role = role_v1;
ALTER TABLE staff DROP COLUMN role_v1;
