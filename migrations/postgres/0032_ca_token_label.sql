-- The token that holds a CA's key (issue 15): a root's key is in the root token, opened only in
-- a key ceremony with a quorum of custodian shares; NULL is the online `ca` token
-- ([hsm] token_label), where issuing-CA keys (and the roots of data directories made before
-- the root token) live.
ALTER TABLE cas ADD COLUMN token_label TEXT;
