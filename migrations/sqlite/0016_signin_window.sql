-- When the current run of failed sign-ins began (Unix seconds; 0: none). Failures are counted in
-- a window of the lock's length and forgotten when a lock lapses, so an outsider cannot keep an
-- account locked by one wrong password per lapse (docs/RA.md "Staff sign-in").
ALTER TABLE staff ADD COLUMN failed_since INTEGER NOT NULL DEFAULT 0;
