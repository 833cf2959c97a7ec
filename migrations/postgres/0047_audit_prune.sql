-- Audit retention (issue 18, docs/AUDIT.md "Retention"): audit_log stays append-only except
-- for the records a purge has declared (Authority::prune_audit sets `upto`, in the transaction
-- that appends the signed audit.pruned record and deletes them, and sets it back to 0 before
-- it commits). Any other DELETE, UPDATE or TRUNCATE is still refused — also if the bound's
-- row is gone (fail closed), and that row cannot be deleted.
CREATE TABLE audit_prune (
    id   BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    upto BIGINT NOT NULL
);
INSERT INTO audit_prune (id, upto) VALUES (1, 0);
CREATE FUNCTION audit_prune_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_prune is kept';
END;
$$;
CREATE TRIGGER audit_prune_keep BEFORE DELETE OR TRUNCATE ON audit_prune
    FOR EACH STATEMENT EXECUTE FUNCTION audit_prune_keep();
CREATE FUNCTION audit_log_delete_pruned_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.seq <= COALESCE((SELECT upto FROM audit_prune WHERE id = 1), 0) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
DROP TRIGGER audit_log_no_change ON audit_log;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_delete_pruned_only();
