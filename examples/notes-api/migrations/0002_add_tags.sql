-- Tags on notes. Additive, with a default, so version 1 of the app (which does not know
-- about tags) keeps working on this schema: a rollback needs no schema rollback.
ALTER TABLE notes ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
CREATE INDEX notes_tags_idx ON notes USING gin (tags);
