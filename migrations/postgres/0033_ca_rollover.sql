-- CA rollover (issue 15): each CA has an id (`name`: `individual` for the first CA of a role,
-- `individual-2` for its successor), a role, its generation within the role, and where it is
-- in its life. A role names its current CA: the one row of the role in state `active`.
--   pending    made by a rollover ceremony, not yet issuing (its certificate is published)
--   active     new issuance goes to it
--   superseded replaced: issues nothing, still publishes CRLs and signs OCSP until its last
--              certificate expires
--   retired    every certificate it issued has expired: its final CRL stays, nothing is signed
ALTER TABLE cas ADD COLUMN role TEXT NOT NULL DEFAULT '';
ALTER TABLE cas ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE cas ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE cas ADD COLUMN state_changed_at BIGINT;
UPDATE cas SET role = name;
CREATE UNIQUE INDEX cas_one_active_per_role ON cas (role) WHERE state = 'active';
CREATE UNIQUE INDEX cas_role_generation ON cas (role, generation);
