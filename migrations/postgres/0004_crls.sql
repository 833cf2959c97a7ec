-- CRLs: see migrations/sqlite/0004_crls.sql.
CREATE TABLE crl_numbers (
    issuer TEXT PRIMARY KEY NOT NULL,
    last   BIGINT NOT NULL
);
CREATE TABLE crls (
    issuer      TEXT NOT NULL,
    number      BIGINT NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT NOT NULL,
    entries     BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    PRIMARY KEY (issuer, number)
);
