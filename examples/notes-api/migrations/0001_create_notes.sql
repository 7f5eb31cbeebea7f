-- Notes: the app's only table.
-- `plainsail migrate` runs each file in its own transaction and records it in
-- plainsail_migrations; do not add BEGIN/COMMIT here.
CREATE TABLE notes (
    id         bigserial PRIMARY KEY,
    text       text        NOT NULL CHECK (length(text) > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
