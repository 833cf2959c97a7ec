-- LDAP publishing (issue 16, docs/DIRECTORY.md "LDAP"). ldap_pending: the directory entries
-- whose content may have changed, queued in the same transaction as the change (a certificate
-- issued, revoked, held or released, a holder's choice, a CRL published). entry is
-- 'mail:<address>' (a subscriber's entry: every published certificate of that address) or
-- 'ca:<name>' (a CA's entry: its certificate and its newest full CRL). The publisher rereads
-- what the entry should hold, writes it, and deletes the row only if version is unchanged.
CREATE TABLE ldap_pending (
    entry      TEXT PRIMARY KEY NOT NULL,
    version    BIGINT NOT NULL,
    queued_at  BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX ldap_pending_due ON ldap_pending (next_at);
-- What the directory holds, as last written: each published certificate and its entry, so an
-- expired certificate is taken out of its entry (nothing else changes at expiry).
CREATE TABLE ldap_published (
    serial    TEXT PRIMARY KEY NOT NULL,
    entry     TEXT NOT NULL,
    not_after BIGINT NOT NULL
);
CREATE INDEX ldap_published_entry ON ldap_published (entry);
CREATE INDEX ldap_published_expiry ON ldap_published (not_after);
