"""`plainsail lint migrations`: find schema changes the running app cannot survive.

Parses SQL with pglast (PostgreSQL's own parser), imported only here, never by the
migration runner.
"""
