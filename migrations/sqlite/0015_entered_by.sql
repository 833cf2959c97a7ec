-- The member of staff who entered an application (a walk-in, or through the JSON API); NULL when
-- the citizen applied online. That person does not approve it (docs/RA.md "The counter").
ALTER TABLE applications ADD COLUMN entered_by TEXT REFERENCES staff (id);
