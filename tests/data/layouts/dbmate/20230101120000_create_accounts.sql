-- migrate:up
create table accounts (
  id bigserial primary key,
  name varchar(255) not null,
  created_at timestamptz not null default now()
);

-- migrate:down
drop table accounts;
