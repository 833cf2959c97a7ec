-- Role grants of admin, officer, auditor and data_owner need a second admin (issue 14): an
-- account made with one of those roles stays disabled, with its grant waiting here, until an
-- admin other than the one who asked approves it.
CREATE TABLE staff_role_grants (
    staff        TEXT PRIMARY KEY NOT NULL REFERENCES staff (id),
    role         TEXT NOT NULL,
    requested_by TEXT NOT NULL REFERENCES staff (id),
    requested_at BIGINT NOT NULL
);
