-- When a command-line session token (`ecert login`, scope `session`) was last used: it ends
-- after `[ra] session_idle_minutes` without use, as a browser session does (issue 14).
ALTER TABLE api_tokens ADD COLUMN last_used BIGINT;
