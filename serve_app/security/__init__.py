"""Authentication pieces: password hashing, JWTs, opaque tokens (refresh tokens, API keys), rate limits."""
