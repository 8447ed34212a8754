"""The server: app factory, settings, CLI, auth, the error envelope and the wiring table."""
