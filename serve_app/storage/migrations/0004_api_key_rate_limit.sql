-- A key's own rate limit (limits notation, e.g. '20000/minute'): a backend system's key needs more than a
-- student's. NULL: the configured rate_limits.per_principal.
ALTER TABLE api_keys ADD COLUMN rate_limit text;
