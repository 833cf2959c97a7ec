-- Expiry reminders (issue 16): one row per certificate and threshold (days before expiry)
-- mailed, claimed before the mail goes out, so restarts and several instances never send twice.
CREATE TABLE expiry_reminders (
    serial  TEXT NOT NULL,
    days    BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (serial, days)
);
-- The subscriber turned reminders off on the tracking page.
ALTER TABLE applications ADD COLUMN reminders_off BIGINT NOT NULL DEFAULT 0;
