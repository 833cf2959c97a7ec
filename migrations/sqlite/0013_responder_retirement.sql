-- When an expired OCSP responder's key was destroyed in the HSM (docs/OCSP.md): nothing it
-- signed is valid once its certificate has expired, so its key is not kept.
ALTER TABLE ocsp_responders ADD COLUMN key_destroyed_at INTEGER;
