-- Every status change looks up the application holding the certificate (its directory entry,
-- issue 16), and so do the counter's revocation checks: by index, not by scanning every
-- application.
CREATE INDEX applications_certificate ON applications (certificate);
