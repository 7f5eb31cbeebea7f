#!/usr/bin/env bash
# A 3-node Docker Swarm for the swarm tests: one manager and two workers, each a host of
# scripts/hosts.sh (a network namespace with its own sshd and Docker Engine), in a set of its
# own (folder /var/tmp/psswarm, names pss1..pss3, addresses 10.232.N.2) so it never touches
# the hosts of the fleet tests. The nodes reach each other through the machine; overlay
# networks work (the kernel has VXLAN), the routing mesh does not where the kernel lacks IPVS.
#
# Usage (as root; every command is idempotent):
#   scripts/swarm.sh up              bring up the hosts and the Swarm; print `hosts.sh list`
#   scripts/swarm.sh forward PORT... make 127.0.0.1:PORT of the machine answer on every node
#                                    (a registry: every node pulls 127.0.0.1:PORT/REPO)
#   scripts/swarm.sh list | env      as scripts/hosts.sh (the manager is the first line)
#   scripts/swarm.sh down            leave the Swarm and remove the hosts
#
# Environment: PLAINSAIL_SWARM_DIR, PLAINSAIL_SWARM_PREFIX, PLAINSAIL_SWARM_NET (defaults
# above) are passed to scripts/hosts.sh as its DIR, PREFIX and NET.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export PLAINSAIL_HOSTS_DIR=${PLAINSAIL_SWARM_DIR:-/var/tmp/psswarm}
export PLAINSAIL_HOSTS_PREFIX=${PLAINSAIL_SWARM_PREFIX:-pss}
export PLAINSAIL_HOSTS_NET=${PLAINSAIL_SWARM_NET:-10.232}
nodes=3

log() { printf 'swarm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
hosts() { bash "$here/hosts.sh" "$@"; }
engine() { # docker against node N's engine
  local n=$1; shift
  docker -H "unix://$PLAINSAIL_HOSTS_DIR/$PLAINSAIL_HOSTS_PREFIX$n/docker.sock" "$@"
}
address() { echo "$PLAINSAIL_HOSTS_NET.$1.2"; }
state() { engine "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

up() {
  hosts up "$nodes" >/dev/null
  local manager; manager=$(address 1)
  if [ "$(state 1)" != active ]; then
    engine 1 swarm init --advertise-addr "$manager" --listen-addr "$manager:2377" >/dev/null \
      || die "swarm init on $manager failed"
  fi
  local token n
  token=$(engine 1 swarm join-token --quiet worker)
  for n in $(seq 2 "$nodes"); do
    case "$(state "$n")" in
      active) ;;
      pending|error) engine "$n" swarm leave --force >/dev/null 2>&1 || true
        engine "$n" swarm join --token "$token" --advertise-addr "$(address "$n")" \
          --listen-addr "$(address "$n"):2377" "$manager:2377" >/dev/null ;;
      *) engine "$n" swarm join --token "$token" --advertise-addr "$(address "$n")" \
          --listen-addr "$(address "$n"):2377" "$manager:2377" >/dev/null \
          || die "node $n could not join the Swarm at $manager:2377" ;;
    esac
  done
  local ready=0
  for _ in $(seq 1 120); do
    ready=$(engine 1 node ls --format '{{.Status}} {{.Availability}}' | grep -c '^Ready Active$' \
      || true)
    [ "$ready" -ge "$nodes" ] && break
    sleep 0.5
  done
  [ "$ready" -ge "$nodes" ] || die "only $ready of $nodes nodes are Ready; see $PLAINSAIL_HOSTS_DIR/*/dockerd.log"
  hosts list
}

down() {
  local n
  if [ -d "$PLAINSAIL_HOSTS_DIR" ]; then
    for n in $(seq "$nodes" -1 1); do
      [ -S "$PLAINSAIL_HOSTS_DIR/$PLAINSAIL_HOSTS_PREFIX$n/docker.sock" ] \
        && engine "$n" swarm leave --force >/dev/null 2>&1 || true
    done
  fi
  hosts down
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up ;;
  down) down ;;
  forward|unforward|list|env) hosts "$cmd" "$@" ;;
  *) die "usage: scripts/swarm.sh up | forward PORT... | unforward PORT... | list | env | down" ;;
esac
