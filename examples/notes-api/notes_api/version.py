"""What this build of the app is, and the database schema it needs.

Change these two lines to make a new version: APP_VERSION is reported by /health and
/version (the APP_VERSION environment variable overrides it), and REQUIRED_SCHEMA is the
leading number of the newest migration this code relies on. /health fails until the
database has at least that migration, so a version deployed before its migration ran
never passes the health gate.
"""

APP_VERSION = "1"
REQUIRED_SCHEMA = "0002"
