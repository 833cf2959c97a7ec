-- The public directory (issue 16, docs/DIRECTORY.md): the subscriber chose to publish the
-- certificate (at application, or later on the tracking page).
ALTER TABLE applications ADD COLUMN publish BIGINT NOT NULL DEFAULT 0;
CREATE INDEX applications_email ON applications (email);
