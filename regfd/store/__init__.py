"""Persistence: the directory, audit trail and compliance state in Redis (or a TOML file for evaluation)."""
