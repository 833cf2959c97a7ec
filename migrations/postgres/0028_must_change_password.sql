-- A password an admin reset is a temporary one (issue 14): its holder chooses a new one at the next
-- sign-in before doing anything else.
ALTER TABLE staff ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
