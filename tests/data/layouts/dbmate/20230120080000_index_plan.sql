-- migrate:up transaction:false
create index concurrently accounts_plan_idx on accounts (plan);

-- migrate:down
drop index accounts_plan_idx;
