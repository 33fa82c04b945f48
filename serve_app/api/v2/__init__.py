"""Product routes under /v2."""
