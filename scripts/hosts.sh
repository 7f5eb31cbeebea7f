#!/usr/bin/env bash
# Test hosts on this one machine: each host is a network namespace with its own sshd and its
# own Docker Engine (own data-root, exec-root and socket), reachable from the machine only
# over SSH, as a real server would be. Used by the fleet tests and benchmarks; meant to be
# reused by anything that needs several hosts (a Swarm: the engines reach each other through
# the machine, see "Addresses").
#
# Usage (as root; every command is idempotent):
#   scripts/hosts.sh up [N]           bring up hosts 1..N (default 3), print them as `list` does
#   scripts/hosts.sh forward PORT...  make the machine's 127.0.0.1:PORT answer on 127.0.0.1:PORT
#                                     inside every host (a registry, PostgreSQL): image names and
#                                     database URLs are then the same on every host
#   scripts/hosts.sh unforward PORT...  undo `forward`
#   scripts/hosts.sh list             one line per host that is up:
#                                     NAME ADDRESS DOCKER_SOCKET HOME
#   scripts/hosts.sh env              shell variables for clients: the SSH user, the client key,
#                                     the known_hosts file (eval "$(scripts/hosts.sh env)")
#   scripts/hosts.sh down             stop everything, remove the namespaces and their files
#
# Addresses: host i is named ${PREFIX}i and listens (sshd on port 22) on 10.231.i.2; the
# machine's side of its veth pair is 10.231.i.1 and the host's default route. Traffic between
# hosts goes through the machine; an iptables DOCKER-USER rule accepts it for 10.231.0.0/16.
# SSH: user psdeploy (created if missing), key $DIR/client/id_ed25519, host keys in
# $DIR/known_hosts. Each SSH session gets DOCKER_HOST (that host's engine) and its own HOME
# ($DIR/NAME/home), so nothing of one host's state mixes with another's.
# 127.0.0.1:5432 (PostgreSQL) is forwarded by default.
#
# Environment: PLAINSAIL_HOSTS_DIR (default /var/tmp/pshosts), PLAINSAIL_HOSTS_PREFIX (default
# psh), PLAINSAIL_HOSTS_USER (default psdeploy), PLAINSAIL_HOSTS_NET (default 10.231: the first
# two parts of the addresses; a second set of hosts needs its own DIR, PREFIX and NET, as
# scripts/swarm.sh does). Memory: about 120 MB per host (dockerd and
# its containerd).
set -euo pipefail

dir=${PLAINSAIL_HOSTS_DIR:-/var/tmp/pshosts}
prefix=${PLAINSAIL_HOSTS_PREFIX:-psh}
user=${PLAINSAIL_HOSTS_USER:-psdeploy}
net=${PLAINSAIL_HOSTS_NET:-10.231}
[[ "$net" =~ ^10\.([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$ ]] \
  || { echo "hosts: PLAINSAIL_HOSTS_NET must be 10.N (N 0-255), got $net" >&2; exit 1; }
range=$net.0.0/16
default_ports=(5432)

log() { printf 'hosts: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
running() { # a live process (a zombie left to a PID 1 that does not reap is not)
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]
}
alive() { [ -f "$1" ] && running "$(cat "$1" 2>/dev/null)"; }
names() { # the hosts that exist, in order
  local d
  for d in "$dir/$prefix"[0-9]*; do [ -d "$d" ] && basename "$d"; done | sort -V
}
index_of() { echo "${1#"$prefix"}"; }
in_ns() { nsenter --net="/var/run/netns/$1" "${@:2}"; }

need_tools() {
  [ "$(id -u)" = 0 ] || die "run as root (namespaces, dockerd and sshd need it)"
  local t
  for t in ip nsenter socat dockerd /usr/sbin/sshd ssh-keygen iptables; do
    command -v "$t" >/dev/null || die "$t is missing; run scripts/setup.sh"
  done
}

ensure_user() {
  if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --home-dir "/home/$user" --shell /bin/bash --groups docker "$user" \
      || id "$user" >/dev/null 2>&1 || die "could not create user $user"
  fi
  id -nG "$user" | tr ' ' '\n' | grep -qx docker || usermod -aG docker "$user"
  # Without PAM sshd refuses a locked account ("!"); "*" still allows no password login.
  [ "$(getent shadow "$user" | cut -d: -f2)" = "*" ] || usermod -p '*' "$user"
}

ensure_client_key() {
  mkdir -p "$dir/client" "$dir/fwd"
  chmod 711 "$dir" "$dir/client"
  [ -f "$dir/client/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C plainsail-test-client \
    -f "$dir/client/id_ed25519"
  cp "$dir/client/id_ed25519.pub" "$dir/client/authorized_keys"
  chmod 644 "$dir/client/authorized_keys"
  touch "$dir/known_hosts" "$dir/ports"
}

ensure_forwarder() { # the machine's side of a forwarded port: a unix socket in $dir/fwd
  local port=$1
  alive "$dir/fwd/$port.pid" && [ -S "$dir/fwd/$port.sock" ] && return
  rm -f "$dir/fwd/$port.sock"
  setsid socat "UNIX-LISTEN:$dir/fwd/$port.sock,fork,unlink-early" "TCP:127.0.0.1:$port" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/fwd/$port.pid"
  for _ in $(seq 1 50); do [ -S "$dir/fwd/$port.sock" ] && return; sleep 0.05; done
  die "the forwarder for port $port did not start"
}

ensure_host_forward() { # the host's side: 127.0.0.1:PORT inside the namespace
  local name=$1 port=$2 d=$dir/$1
  alive "$d/fwd-$port.pid" && return
  setsid nsenter --net="/var/run/netns/$name" socat \
    "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$dir/fwd/$port.sock" \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$d/fwd-$port.pid"
}

ports() { { printf '%s\n' "${default_ports[@]}"; cat "$dir/ports" 2>/dev/null; } | sort -un; }

ensure_netns() {
  local name=$1 i; i=$(index_of "$1")
  local outer="${prefix}o$i" inner="${prefix}i$i"
  [ -e "/var/run/netns/$name" ] || ip netns add "$name"
  if ! ip link show "$outer" >/dev/null 2>&1; then
    ip link add "$outer" type veth peer name "$inner"
    ip link set "$inner" netns "$name"
    ip addr add "$net.$i.1/24" dev "$outer"
    ip -n "$name" addr add "$net.$i.2/24" dev "$inner"
  fi
  ip link set "$outer" up
  ip -n "$name" link set lo up
  ip -n "$name" link set "$inner" up
  ip -n "$name" route replace default via "$net.$i.1"
  # Docker sets FORWARD to DROP; traffic between hosts (a Swarm) passes the machine.
  if iptables -L DOCKER-USER -n >/dev/null 2>&1; then
    iptables -C DOCKER-USER -s "$range" -d "$range" -j ACCEPT 2>/dev/null \
      || iptables -I DOCKER-USER -s "$range" -d "$range" -j ACCEPT
  fi
}

ensure_engine() {
  local name=$1 d=$dir/$1
  export DOCKER_HOST="unix://$d/docker.sock"
  if alive "$d/docker.pid" && docker info >/dev/null 2>&1; then return; fi
  alive "$d/docker.pid" || rm -f "$d/docker.pid"
  local pidfile=$d/exec/containerd/containerd.pid
  if [ -f "$pidfile" ] && ! alive "$pidfile"; then rm -f "$pidfile"; fi
  mkdir -p "$d/data" "$d/exec"
  if ! alive "$d/docker.pid"; then
    setsid nsenter --net="/var/run/netns/$name" dockerd --data-root "$d/data" \
      --exec-root "$d/exec" --pidfile "$d/docker.pid" -H "unix://$d/docker.sock" \
      --group docker </dev/null >"$d/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 1 120); do docker info >/dev/null 2>&1 && return; sleep 0.25; done
  die "the Docker Engine of $name did not start; see $d/dockerd.log"
}

ensure_sshd() {
  local name=$1 d=$dir/$1 i; i=$(index_of "$1")
  [ -f "$d/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "$name" \
    -f "$d/ssh_host_ed25519_key"
  mkdir -p "$d/home"
  chown "$user:" "$d/home"
  chmod 755 "$d" "$d/home"
  cat >"$d/sshd_config" <<EOF
Port 22
ListenAddress $net.$i.2
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
AuthorizedKeysFile $dir/client/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers $user
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64:30:128
SetEnv DOCKER_HOST=unix://$d/docker.sock HOME=$d/home
LogLevel VERBOSE
EOF
  local entry; entry="$net.$i.2 $(cut -d' ' -f1,2 "$d/ssh_host_ed25519_key.pub")"
  grep -qxF "$entry" "$dir/known_hosts" || {
    grep -v "^$net.$i.2 " "$dir/known_hosts" >"$dir/known_hosts.new" || true
    echo "$entry" >>"$dir/known_hosts.new"
    mv "$dir/known_hosts.new" "$dir/known_hosts"
  }
  chmod 644 "$dir/known_hosts"
  mkdir -p /run/sshd
  if ! alive "$d/sshd.pid"; then
    in_ns "$name" /usr/sbin/sshd -f "$d/sshd_config" -E "$d/sshd.log"
  fi
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$net.$i.2/22") 2>/dev/null && return
    sleep 0.05
  done
  die "sshd of $name does not answer on $net.$i.2:22; see $d/sshd.log"
}

up() {
  local n=${1:-3} i name pids=()
  [[ "$n" =~ ^[1-9][0-9]?$ ]] && [ "$n" -le 200 ] || die "up: N must be 1-200, got $n"
  need_tools
  ensure_user
  ensure_client_key
  local p
  for p in $(ports); do ensure_forwarder "$p"; done
  for i in $(seq 1 "$n"); do
    name=$prefix$i
    mkdir -p "$dir/$name"
    ensure_netns "$name"
    for p in $(ports); do ensure_host_forward "$name" "$p"; done
    ensure_engine "$name" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "a Docker Engine did not start"; done
  for i in $(seq 1 "$n"); do ensure_sshd "$prefix$i"; done
  list
}

forward() {
  need_tools
  ensure_client_key
  local p name
  for p in "$@"; do
    [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "forward: bad port $p"
    grep -qx "$p" "$dir/ports" || echo "$p" >>"$dir/ports"
    ensure_forwarder "$p"
    for name in $(names); do
      [ -e "/var/run/netns/$name" ] && ensure_host_forward "$name" "$p"
    done
  done
}

stop_pid() { # stop the process of a pid file and wait (at most $2 seconds) until it is gone
  local f=$1 wait=${2:-5} pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  if running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((wait * 20))); do running "$pid" || break; sleep 0.05; done
    running "$pid" && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
}

unforward() {
  local p name
  for p in "$@"; do
    for name in $(names); do stop_pid "$dir/$name/fwd-$p.pid"; done
    stop_pid "$dir/fwd/$p.pid"
    rm -f "$dir/fwd/$p.sock"
    if [ -f "$dir/ports" ]; then
      grep -vx "$p" "$dir/ports" >"$dir/ports.new" || true
      mv "$dir/ports.new" "$dir/ports"
    fi
  done
}

list() {
  local name i
  for name in $(names); do
    i=$(index_of "$name")
    [ -e "/var/run/netns/$name" ] && alive "$dir/$name/sshd.pid" || continue
    printf '%s %s %s %s\n' "$name" "$net.$i.2" "$dir/$name/docker.sock" "$dir/$name/home"
  done
}

env_vars() {
  printf 'PLAINSAIL_HOSTS_USER=%s\nPLAINSAIL_HOSTS_KEY=%s\nPLAINSAIL_HOSTS_KNOWN_HOSTS=%s\n' \
    "$user" "$dir/client/id_ed25519" "$dir/known_hosts"
}

down() {
  need_tools
  local name i d f
  for name in $(names); do
    d=$dir/$name
    i=$(index_of "$name")
    stop_pid "$d/sshd.pid"
    for f in "$d"/fwd-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
    stop_pid "$d/docker.pid" 30  # dockerd stops its containers and its containerd first
    # Whatever dockerd left mounted under the host's folder, deepest first.
    awk -v p="$d/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
    [ -e "/var/run/netns/$name" ] && ip netns del "$name"
    ip link del "${prefix}o$i" 2>/dev/null || true
    rm -rf "$d"
  done
  for f in "$dir"/fwd/*.pid; do [ -e "$f" ] && stop_pid "$f"; done
  if iptables -C DOCKER-USER -s "$range" -d "$range" -j ACCEPT 2>/dev/null; then
    iptables -D DOCKER-USER -s "$range" -d "$range" -j ACCEPT
  fi
  rm -rf "$dir"
}

cmd=${1:-}
shift || true
case "$cmd" in
  up) up "$@" ;;
  forward) forward "$@" ;;
  unforward) unforward "$@" ;;
  list) list ;;
  env) env_vars ;;
  down) down ;;
  *) die "usage: scripts/hosts.sh up [N] | forward PORT... | unforward PORT... | list | env | down" ;;
esac
