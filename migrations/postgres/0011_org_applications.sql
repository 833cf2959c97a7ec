-- Organisational, encipherment and server applications (docs/RA.md). They are started online
-- and completed at the counter by the organisation's Authorised Representative: the person
-- whose name, HKID, date of birth, phone and address the personal columns then hold.
-- Organisation data is business data (public registers), stored in clear.
ALTER TABLE applications ADD COLUMN organization TEXT;
-- Hong Kong Business Registration number (8 digits).
ALTER TABLE applications ADD COLUMN org_id TEXT;
-- organisational: the Authorised User named in the certificate.
ALTER TABLE applications ADD COLUMN user_surname TEXT;
ALTER TABLE applications ADD COLUMN user_given_name TEXT;
-- server: the DNS names, space-separated, lower case.
ALTER TABLE applications ADD COLUMN dns_names TEXT;
-- server: the Random Value for TLS BR §3.2.2.4.7, and when it was made (not used after 30 days).
ALTER TABLE applications ADD COLUMN dcv_token TEXT;
ALTER TABLE applications ADD COLUMN dcv_token_at BIGINT;
-- The clerk saw the business registration certificate (its number typed and matched) and the
-- organisation's authorisation of the representative, for this version.
ALTER TABLE applications ADD COLUMN org_checked_by TEXT REFERENCES staff (id);
ALTER TABLE applications ADD COLUMN org_checked_at BIGINT;
ALTER TABLE applications ADD COLUMN org_checked_version BIGINT;
-- One row per DNS name that passed domain control validation, with the token it saw.
CREATE TABLE domain_validations (
    application  TEXT NOT NULL REFERENCES applications (id),
    domain       TEXT NOT NULL,
    token        TEXT NOT NULL,
    method       TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    PRIMARY KEY (application, domain)
);
