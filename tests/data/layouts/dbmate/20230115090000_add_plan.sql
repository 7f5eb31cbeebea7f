-- migrate:up
alter table accounts add column plan text not null default 'free';

-- migrate:down
alter table accounts drop column plan;
