-- Consent (issue 18, docs/PRIVACY.md): publication in the directory is recorded like the
-- value-added-notices consent, with the wording version shown and when it was given or
-- withdrawn. Rows published before this migration took the first wording at application.
ALTER TABLE applications ADD COLUMN publish_wording TEXT;
ALTER TABLE applications ADD COLUMN publish_at BIGINT;
UPDATE applications SET publish_wording = 'directory-v1', publish_at = created_at WHERE publish = 1;
