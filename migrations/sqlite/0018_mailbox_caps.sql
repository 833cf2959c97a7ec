-- Mailbox control (S/MIME BR §3.2.2.2): how many e-mail Random Values were sent for an
-- application and how many wrong ones were entered, over its whole life (not per value), so
-- neither can be repeated without bound (docs/RA.md "Applying").
ALTER TABLE applications ADD COLUMN email_codes_sent INTEGER NOT NULL DEFAULT 1;
ALTER TABLE applications ADD COLUMN email_code_failures INTEGER NOT NULL DEFAULT 0;
