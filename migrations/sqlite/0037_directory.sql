-- The public directory (issue 16, docs/DIRECTORY.md): the subscriber chose to publish the
-- certificate (at application, or later on the tracking page).
ALTER TABLE applications ADD COLUMN publish INTEGER NOT NULL DEFAULT 0;
-- Only published addresses are in the index a lookup reads: an unpublished address costs a
-- lookup what an unknown one does.
CREATE INDEX applications_published_email ON applications (email) WHERE publish = 1;
