-- One LDAP entry serves every spelling of an address that differs only in case (`mail` matches
-- without regard to case): the publisher finds the certificates of all of them by this index.
CREATE INDEX applications_published_email_lower ON applications (LOWER(email)) WHERE publish = 1;
