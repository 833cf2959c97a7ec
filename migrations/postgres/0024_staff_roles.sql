-- Separation of duties (issue 14): the operator, auditor and data_owner roles join clerk,
-- supervisor, officer and admin (ca_core::ra::permissions).
ALTER TABLE staff DROP CONSTRAINT staff_role_check;
ALTER TABLE staff ADD CONSTRAINT staff_role_check
    CHECK (role IN ('clerk', 'supervisor', 'officer', 'admin', 'operator', 'auditor', 'data_owner'));
