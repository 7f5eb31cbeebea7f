"""Backups of the app's database: taken before migrations (`policy` says when), stored on
the host under the service's folder (`host`), restored and drilled (`restore`)."""
