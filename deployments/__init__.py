"""Model deployments: one Ray Serve deployment class per model role, backends behind a small interface each."""
