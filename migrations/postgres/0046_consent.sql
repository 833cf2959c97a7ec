-- Consent (issue 18, docs/PRIVACY.md): publication in the directory is recorded like the
-- value-added-notices consent, with the wording version shown and when it was given or
-- withdrawn. Rows published before this migration took the first wording; when is not known
-- (given at application, or later on the tracking page), so it stays empty.
ALTER TABLE applications ADD COLUMN publish_wording TEXT;
ALTER TABLE applications ADD COLUMN publish_at BIGINT;
UPDATE applications SET publish_wording = 'directory-v1' WHERE publish = 1;
