-- organisational-role applications: the Authorised User's role, put in the certificate as
-- subject:title (S/MIME BR §7.1.4.2.5).
ALTER TABLE applications ADD COLUMN user_title TEXT;
-- Why the last issuance of an approved application did not complete (CAA refused, HSM down,
-- ...); cleared when the application is claimed again. Shown to staff.
ALTER TABLE applications ADD COLUMN issue_error TEXT;
