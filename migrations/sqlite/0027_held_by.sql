-- Who placed a certificate on hold (issue 14): a hold an officer (or the command line) placed is
-- released only by an officer, not by any clerk of the outlet.
ALTER TABLE certificates ADD COLUMN held_by TEXT;
