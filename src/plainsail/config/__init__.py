"""plainsail.yml: its model and strict loader, durations, and secret sources."""
