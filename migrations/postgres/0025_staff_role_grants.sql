-- Role grants of admin, officer, auditor and data_owner need a second admin (issue 14): an
-- account made with one of those roles stays disabled, and an account moved to one keeps its
-- old role, with the grant waiting here until an admin other than the one who asked approves.
CREATE TABLE staff_role_grants (
    staff        TEXT PRIMARY KEY NOT NULL REFERENCES staff (id),
    role         TEXT NOT NULL,
    requested_by TEXT NOT NULL REFERENCES staff (id),
    requested_at BIGINT NOT NULL,
    -- 1: the account was made with this role (approval enables it); 0: a role change.
    new_account  INTEGER NOT NULL DEFAULT 0
);
