-- What an API token may do, chosen when it is made: space-separated `read`, `enter` (new
-- applications and counter records) and `decide` (approve, reject). Tokens made before scopes
-- existed keep what they could do (docs/RA.md "JSON API").
ALTER TABLE api_tokens ADD COLUMN scopes TEXT NOT NULL DEFAULT 'read enter decide';
