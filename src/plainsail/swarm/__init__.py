"""`target: swarm`: plainsail's deploy pipeline driving a Docker Swarm through its manager.

- `service`: the argv lists (docker service/secret/config/network) and the service's spec
  as plainsail reads and writes it (pure functions, no I/O)
- `cluster`: what runs (tasks, nodes, the update's status) and the deep health gate
- `deploy`: one deploy or rollback attempt, with its outcome, record and lock
"""
