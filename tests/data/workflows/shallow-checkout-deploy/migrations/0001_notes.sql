-- the fixture repository has migrations
CREATE TABLE notes (id bigint PRIMARY KEY);
