-- Outlets close (issue 14): a closed outlet takes no new applications; its applications stay
-- readable to its staff.
ALTER TABLE outlets ADD COLUMN closed_at BIGINT;
