-- Expiry reminders (issue 16): one row per certificate and threshold (days before expiry),
-- claimed before its mail goes out (claimed_at) and marked sent after (sent_at), so restarts
-- and several instances never send twice; a claim never marked sent (a crash, a failed mail)
-- is taken over an hour later.
CREATE TABLE expiry_reminders (
    serial     TEXT NOT NULL,
    days       INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    sent_at    INTEGER,
    PRIMARY KEY (serial, days)
);
-- The subscriber turned reminders off on the tracking page.
ALTER TABLE applications ADD COLUMN reminders_off INTEGER NOT NULL DEFAULT 0;
