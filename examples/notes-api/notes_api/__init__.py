"""notes-api: a small HTTP API backed by PostgreSQL, the example plainsail deploys."""
