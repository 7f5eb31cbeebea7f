-- Tags on notes. Additive, with a constant default, so version 1 of the app (which does
-- not know about tags) keeps working on this schema: a rollback needs no schema rollback.
-- PostgreSQL 11+ stores a constant default in the catalog: no table rewrite. No index:
-- no query filters on tags yet. When one does, build it in its own file marked
-- '-- plainsail: no-transaction' with CREATE INDEX CONCURRENTLY, so writes never wait.
-- plainsail: allow missing-lock-timeout plainsail migrate sets lock_timeout for every file
ALTER TABLE notes ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
