-- CRLs. crl_numbers holds the last CRLNumber handed out per CA; it is committed before the CRL is
-- signed, so a number is never reused, even after a crash (RFC 5280 §5.2.3: monotonically
-- increasing). crls keeps every CRL published.
CREATE TABLE crl_numbers (
    issuer TEXT PRIMARY KEY NOT NULL,
    last   INTEGER NOT NULL
);
CREATE TABLE crls (
    issuer      TEXT NOT NULL,
    number      INTEGER NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    entries     INTEGER NOT NULL,
    der         BLOB NOT NULL,
    PRIMARY KEY (issuer, number)
);
