-- Failed staff sign-ins per (account, client address): five from one address lock that
-- address out of the account, not the account; the account-wide count in `staff` locks only
-- at a much higher threshold (docs/RA.md "Staff sign-in").
CREATE TABLE signin_failures (
    staff         TEXT NOT NULL REFERENCES staff (id),
    source        TEXT NOT NULL,
    failed_logins BIGINT NOT NULL DEFAULT 0,
    failed_since  BIGINT NOT NULL DEFAULT 0,
    locked_until  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (staff, source)
);
