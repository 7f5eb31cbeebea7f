"""The SQL migration runner: files, history, and one module per database kind.

Nothing here imports beyond the standard library, except `postgres` (psycopg), which is
imported only when DATABASE_URL is PostgreSQL.
"""
