"""The proxy's host commands as data: pure functions that return argv lists, no I/O.

Paths and names travel as positional parameters of fixed `sh -c` scripts, never formatted
into shell code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from plainsail.hosts.docker import LABEL_ROLE
from plainsail.proxy.caddyconf import ADMIN_SOCKET, MOUNT

DEFAULT_HOST_DIR = "~/.plainsail"
STATE_FOLDER = "_proxy"  # beside the services' folders; no service name starts with _
LABEL_SETTINGS = "dev.plainsail.proxy-settings"
ROLE = "proxy"
BOOT_FILE = "boot.json"
SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class Settings:
    """What is host-level about the proxy: every service on the host must agree on it."""

    image: str
    http_port: int
    https_port: int
    network: str

    def to_label(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        return (f"image {self.image}, ports {self.http_port}/{self.https_port}, "
                f"network {self.network}")


def container_name(host_dir: str) -> str:
    """One proxy per host state folder: `plainsail-proxy` for the default folder."""
    if host_dir.rstrip("/") == DEFAULT_HOST_DIR:
        return "plainsail-proxy"
    return "plainsail-proxy-" + hashlib.sha256(host_dir.encode()).hexdigest()[:8]


# Linux 5.14+: when one of the listening sockets sharing a port (SO_REUSEPORT) closes, the
# connections waiting in its queue move to another one instead of being reset.
MIGRATE_SYSCTL = "net.ipv4.tcp_migrate_req"
MIGRATE_SYSCTL_FILE = "/proc/sys/net/ipv4/tcp_migrate_req"


# Prints, one per line: "home <$HOME>", "ids <uid>:<gid>", "container <status>|<settings
# label>" (status "missing" when there is none), for an existing container "migrating
# <its MIGRATE_SYSCTL value>", "socket yes|no", "migrate yes|no" (whether the kernel can
# hand a closing listener's queued connections over: see `run`), then the settings file.
# $1 the container name, $2 the state folder (may start with ~/, expanded here).
STATE_SCRIPT = (
    'dir="$2"; case "$dir" in "~") dir="$HOME";; "~/"*) dir="$HOME/${dir#"~/"}";; esac; '
    'printf "home %s\\nids %s:%s\\n" "$HOME" "$(id -u)" "$(id -g)"; '
    's=$(docker container inspect --format '
    "'{{.State.Status}}|{{index .Config.Labels \"" + LABEL_SETTINGS + "\"}}\n"
    "migrating {{index .HostConfig.Sysctls \"" + MIGRATE_SYSCTL + "\"}}' "
    '"$1" 2>/dev/null) || s="missing|"; printf "container %s\\n" "$s"; '
    'if [ -S "$dir/' + ADMIN_SOCKET + '" ]; then echo "socket yes"; else echo "socket no"; fi; '
    'if [ -e ' + MIGRATE_SYSCTL_FILE + ' ]; then echo "migrate yes"; else echo "migrate no"; fi; '
    'cat -- "$dir/' + SETTINGS_FILE + '" 2>/dev/null; true'
)


def state(name: str, state_dir: str) -> list[str]:
    return ["sh", "-c", STATE_SCRIPT, "sh", name, state_dir]


ENSURE_NETWORK = ('docker network inspect "$1" >/dev/null 2>&1 || '
                  'docker network create --label "$2" "$1" >/dev/null')


def ensure_network(network: str) -> list[str]:
    """Create the Docker network unless it exists (a parallel create may race: the caller
    checks again)."""
    return ["sh", "-c", ENSURE_NETWORK, "sh", network, f"{LABEL_ROLE}={ROLE}"]


# Make the state folder (0700) and move a saved configuration aside ($2 = 1) when the
# proxy starts with other host-level settings than the ones it was saved with.
PREPARE_DIR = (
    'umask 077; mkdir -p -- "$1/config/caddy" "$1/data" "$1/certs" && chmod 700 -- "$1" && '
    'if [ "$2" = 1 ] && [ -f "$1/config/caddy/autosave.json" ]; then '
    'mv -f -- "$1/config/caddy/autosave.json" "$1/config/caddy/autosave.json.old"; fi; '
    'rm -f -- "$1/' + ADMIN_SOCKET + '"'
)


def prepare_dir(state_dir: str, discard_saved: bool) -> list[str]:
    return ["sh", "-c", PREPARE_DIR, "sh", state_dir, "1" if discard_saved else "0"]


def run(*, name: str, settings: Settings, state_dir: str, user: str,
        migrate: bool = True) -> list[str]:
    """`docker run` of the proxy with its own command line, so any image with caddy >= 2.6
    works: the config from the state folder (the last saved one if there is one, else the
    boot config), the admin API on a unix socket there, certificates and Caddy's local CA
    kept there too. It runs as the SSH user (`user` is uid:gid), who thereby owns the
    socket; ports below 1024 need no capability inside its own network namespace.

    `migrate` (the kernel has MIGRATE_SYSCTL): Caddy opens a new listening socket for every
    configuration it loads (SO_REUSEPORT) and closes the old one; without the setting, the
    connections that had arrived at the old socket but were not accepted yet are reset at
    every switch (docs/proxy.md, "What a switch costs a client")."""
    return [
        "docker", "run", "--detach", "--name", name,
        "--restart", "unless-stopped",
        "--user", user,
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
        *(["--sysctl", f"{MIGRATE_SYSCTL}=1"] if migrate else []),
        "--network", settings.network,
        "--publish", f"{settings.http_port}:{settings.http_port}",
        "--publish", f"{settings.https_port}:{settings.https_port}",
        "--volume", f"{state_dir}:{MOUNT}",
        "--env", f"HOME={MOUNT}",
        "--env", f"XDG_CONFIG_HOME={MOUNT}/config",
        "--env", f"XDG_DATA_HOME={MOUNT}/data",
        "--label", f"{LABEL_ROLE}={ROLE}",
        "--label", f"{LABEL_SETTINGS}={settings.to_label()}",
        "--entrypoint", "caddy",
        settings.image,
        "run", "--config", f"{MOUNT}/{BOOT_FILE}", "--resume",
    ]


def start(name: str) -> list[str]:
    return ["docker", "start", name]


def restart(name: str) -> list[str]:
    return ["docker", "restart", "-t", "10", name]


def logs(name: str, tail: int) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), "--timestamps", name]


def read_file(path: str) -> list[str]:
    return ["cat", "--", path]


# Remove every file of a folder except those whose name starts with $2 (old certificates).
PRUNE_CERTS = ('[ -d "$1" ] || exit 0; for f in "$1"/*; do [ -e "$f" ] || continue; '
               'case "${f##*/}" in "$2".*) ;; *) rm -f -- "$f";; esac; done')


def prune_certs(folder: str, keep: str) -> list[str]:
    return ["sh", "-c", PRUNE_CERTS, "sh", folder, keep]


def remove_folder(folder: str) -> list[str]:
    return ["rm", "-rf", "--", folder]
