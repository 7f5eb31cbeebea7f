"""`plainsail lint migrations`: find schema changes the running app cannot survive.

Parses SQL with pglast (PostgreSQL's own parser), imported here; the migration runner
uses it only, when installed, to read the body of a DO block (files.do_commits).
"""
