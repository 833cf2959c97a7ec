-- The auditor's filters and exports select records by time (issue 14): without this index every
-- request scanned the whole audit log.
CREATE INDEX audit_log_at ON audit_log (at);
