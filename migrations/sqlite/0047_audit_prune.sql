-- Audit retention (issue 18, docs/AUDIT.md "Retention"): audit_log stays append-only except
-- for the records a purge has declared (Authority::prune_audit sets `upto`, in the transaction
-- that appends the signed audit.pruned record and deletes them, and sets it back to 0 before
-- it commits). Any other DELETE or UPDATE is still refused — also if the bound's row is gone
-- (fail closed), and that row cannot be deleted.
CREATE TABLE audit_prune (
    id   INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    upto INTEGER NOT NULL
);
INSERT INTO audit_prune (id, upto) VALUES (1, 0);
CREATE TRIGGER audit_prune_keep BEFORE DELETE ON audit_prune
BEGIN
    SELECT RAISE(ABORT, 'audit_prune is kept');
END;
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.seq > COALESCE((SELECT upto FROM audit_prune WHERE id = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
