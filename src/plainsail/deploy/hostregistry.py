"""`registry: {mode: host}` on a host: a registry on the host's loopback, fed over SSH.

Each host runs its own registry, bound to 127.0.0.1:`registry.port`, its data in
`<host_dir>/<service>/registry/`: Debian's `docker-registry` when the host has it
(started in the background, its pid in that folder), otherwise a container of
`registry.image` (pinned by digest) publishing only on 127.0.0.1. A running one is reused;
it keeps running after the deploy, holding every version sent so far (so a rollback to an
earlier version finds its image there).

The deployer copies the image and its signature from its own loopback registry to the
host's through a port forwarded over the deploy's SSH connection, verifies the signature
there (the signed identity is the configured `image`, not the loopback address), and the
host pulls `127.0.0.1:PORT/<repository>@<digest>`, which Docker does over plain HTTP
because it is on loopback.

Other local users of the host can reach any loopback port, so the registry is not open:
- it asks every request for a password (htpasswd, user `plainsail`), made at random by
  the deployer the first time and kept in `registry/auth/` (the folder 0700, files 0600,
  owned by the SSH user); Docker on the host gets it through `docker login` (the SSH
  user's own ~/.docker/config.json);
- before the password goes to whatever answers on the port, the host proves that the
  listening socket is plainsail's registry: every socket listening on that port is one of
  the started docker-registry's own (its pid in the registry folder), or, for the
  container, one of root's (Docker's port proxy; no other user is root), so a program of
  another user that took the port first gets neither the image nor the password.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import secrets
import time

from plainsail.config.model import Config
from plainsail.errors import RegistryError, RemoteError
from plainsail.hosts.executor import Executor, error_summary
from plainsail.progress import NULL, Progress
from plainsail.secret import Secret
from plainsail.supply.images import ImageRef
from plainsail.supply.localregistry import answers, config_text
from plainsail.supply.registry import RegistryClient
from plainsail.supply.registrycopy import CopyStats, copy_image

LABEL_PORT = "dev.plainsail.registry-port"
START_WAIT = 30.0  # seconds for a started registry to answer
NO_REGISTRY = 3  # exit code of the start script: neither the binary nor registry.image
USER = "plainsail"  # the one user of a host's registry
NOT_OURS = 5  # exit code of OURS_SCRIPT: something else listens on the port
NOTHING = 4  # exit code of OURS_SCRIPT: nothing listens on the port

# Reuse a running registry of ours on this port, else start the binary, else a container.
# Every value arrives as a positional parameter; nothing is formatted into this text.
# stdin: a new password and its htpasswd line, kept only when the registry has none yet.
START_SCRIPT = r"""
dir=$1 port=$2 image=$3 name=$4 service=$5 config=$6
umask 077
mkdir -p "$dir/data" "$dir/auth" || exit 1
chmod 700 "$dir" "$dir/auth" || exit 1
IFS= read -r password; IFS= read -r entry
if [ ! -s "$dir/auth/password" ] || [ ! -s "$dir/auth/htpasswd" ]; then
  rm -f "$dir/auth/password" "$dir/auth/htpasswd"
  printf '%s\n' "$entry" > "$dir/auth/htpasswd" || exit 1
  printf '%s\n' "$password" > "$dir/auth/password" || exit 1
fi
if [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  if [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ] && \
     printf '%s' "$config" | cmp -s - "$dir/config.yml"; then
    echo "reused docker-registry (pid $(cat "$dir/pid"))"; exit 0
  fi
  kill "$(cat "$dir/pid")"; sleep 1
fi
rm -f "$dir/pid"
if command -v docker-registry >/dev/null 2>&1; then
  printf '%s' "$config" > "$dir/config.yml" || exit 1
  setsid docker-registry serve "$dir/config.yml" </dev/null >>"$dir/log" 2>&1 &
  echo $! > "$dir/pid"; echo "$port" > "$dir/port"
  echo "started docker-registry (pid $!)"; exit 0
fi
if [ -z "$image" ]; then
  echo "this host has no docker-registry and registry.image is not set" >&2; exit 3
fi
fmt='{{.State.Running}} {{index .Config.Labels "dev.plainsail.registry-port"}}'
fmt="$fmt"' {{index .Config.Labels "dev.plainsail.registry-auth"}}'
state=$(docker container inspect --format "$fmt" "$name" 2>/dev/null)
if [ "$state" = "true $port htpasswd" ]; then echo "reused container $name"; exit 0; fi
docker rm --force "$name" >/dev/null 2>&1
docker run --detach --name "$name" --restart unless-stopped \
  --label "dev.plainsail.service=$service" --label dev.plainsail.role=registry \
  --label "dev.plainsail.registry-port=$port" --label dev.plainsail.registry-auth=htpasswd \
  --publish "127.0.0.1:$port:5000" \
  --env REGISTRY_AUTH=htpasswd --env REGISTRY_AUTH_HTPASSWD_REALM=plainsail \
  --env REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd \
  --volume "$dir/auth/htpasswd:/auth/htpasswd:ro" \
  --volume "$dir/data:/var/lib/registry" "$image" >/dev/null || exit 1
echo "started container $name"
"""

# Print the registry's password only when every socket listening on the port (IPv4 and
# IPv6, any address) is the registry's own: a socket of the docker-registry whose pid is
# in the folder, or else one of root's (the container's port proxy).
OURS_SCRIPT = r"""
dir=$1 port=$2 name=$3
want=$(printf ':%04X' "$port")
found=$(awk -v p="$want" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p \
  { print $8, $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
pid=$(cat "$dir/pid" 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  fds=$(ls -l "/proc/$pid/fd" 2>/dev/null)
else
  pid=""
fi
if [ -z "$found" ]; then
  # Docker without its userland proxy forwards a published port with NAT rules alone:
  # nothing listens, and the container of ours must run.
  running=$(docker container inspect --format '{{.State.Running}}' "$name" 2>/dev/null)
  if [ -n "$pid" ] || [ "$running" != true ]; then
    echo "nothing listens on port $port" >&2; exit 4
  fi
fi
[ -z "$found" ] || { echo "$found" | while read -r uid inode; do
  if [ -n "$pid" ]; then
    case "$fds" in *"socket:[$inode]"*) ;; *) echo "$uid"; exit 5;; esac
  elif [ "$uid" != 0 ]; then
    echo "$uid"; exit 5
  fi
done >&2; } || exit 5
cat "$dir/auth/password"
"""


def registry_folder(state_root: str) -> str:
    """Where the host's registry keeps its data, config, pid and log."""
    return f"{state_root}/registry"


def container_name(service: str) -> str:
    return f"{service}-registry"


def start_argv(cfg: Config, state_root: str) -> list[str]:
    """argv that starts the host's registry, or finds it running (prints which)."""
    assert cfg.registry is not None
    folder, port = registry_folder(state_root), cfg.registry.port
    return ["sh", "-c", START_SCRIPT, "sh", folder, str(port), cfg.registry.image or "",
            container_name(cfg.service), cfg.service,
            config_text(f"{folder}/data", port, htpasswd=f"{folder}/auth/htpasswd")]


def pull_repository(cfg: Config) -> str:
    """The repository hosts pull from: `image` itself, or with registry.mode host the
    same path in the host's loopback registry (127.0.0.1:PORT/<path>)."""
    if not cfg.host_mode:
        return cfg.image
    assert cfg.registry is not None
    return f"127.0.0.1:{cfg.registry.port}/{ImageRef(cfg.image).path}"


def bcrypt(password: str) -> str:
    """The bcrypt hash of `password` (what distribution's htpasswd accepts), made by the
    system's libcrypt (libxcrypt on Linux). The password is 32 random bytes, so a low cost
    is enough; the registry checks it on every request."""
    name = ctypes.util.find_library("crypt")
    try:
        lib = ctypes.CDLL(name or "libcrypt.so.1")
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
                                      ctypes.c_int]
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        setting = lib.crypt_gensalt(b"$2b$", 5, None, 0)
        hashed = lib.crypt(password.encode(), setting) if setting else None
    except (OSError, AttributeError):
        hashed = None
    text = hashed.decode() if hashed else ""
    if not text.startswith("$2b$"):
        raise RegistryError("registry.mode host needs bcrypt from this machine's libcrypt "
                            "(libxcrypt, Debian's libcrypt1) to protect the host's registry "
                            "with a password; install it")
    return text


def new_credentials() -> str:
    """stdin of the start script: a new random password and its htpasswd line."""
    password = secrets.token_urlsafe(32)
    return f"{password}\n{USER}:{bcrypt(password)}\n"


def credentials(ex: Executor, cfg: Config, folder: str) -> Secret:
    """The host registry's password, once the host proved that what listens on
    registry.port is that registry (RegistryError otherwise). The password joins the
    executor's secrets, so no message or log can show it."""
    assert cfg.registry is not None
    port = cfg.registry.port
    res = ex.run(["sh", "-c", OURS_SCRIPT, "sh", folder, str(port),
                  container_name(cfg.service)], check=False,
                 timeout=30, what="check who listens on the registry's port")
    if res.returncode == NOT_OURS:
        uid = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "?"
        raise RegistryError(
            f"{ex.host.name}: 127.0.0.1:{port} is held by a program that is not plainsail's "
            f"registry (a socket of user id {uid}); nothing was sent to it. Find it with "
            f"ss -ltnp 'sport = :{port}' on the host, stop it, or set registry.port")
    if res.returncode == NOTHING:
        raise RegistryError(f"{ex.host.name}: nothing listens on 127.0.0.1:{port}, where "
                            "plainsail's registry should; its log is in " + folder)
    if not res.ok or not res.stdout.strip():
        raise ex.failure(res, "check who listens on the registry's port")
    secret = Secret(res.stdout.strip())
    ex.secrets.append(secret)
    return secret


def ensure(ex: Executor, cfg: Config, argv: list[str], timeout: float) -> str:
    """Run the start script on the host, wait until the registry answers through the SSH
    connection, prove it is plainsail's own and log Docker in to it; what was done
    ("started ..." or "reused ...")."""
    assert cfg.registry is not None
    port = cfg.registry.port
    res = ex.run(argv, timeout=timeout, check=False, input=new_credentials(),
                 what="start the host's registry")
    if res.returncode == NO_REGISTRY:
        raise RegistryError(
            f"{ex.host.name}: registry.mode host needs a registry on the host, and it has "
            "no docker-registry; install it there (apt-get install docker-registry) or set "
            "registry.image to a registry image pinned by digest (e.g. "
            "registry:2@sha256:...)"
        )
    if not res.ok:
        raise ex.failure(res, "start the host's registry")
    did = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "started"
    address = "{}:{}".format(*ex.reach("127.0.0.1", port))
    folder = argv[4]
    deadline = time.monotonic() + min(timeout, START_WAIT)
    while not answers(address):
        if time.monotonic() > deadline:
            log = ex.run(["tail", "-n", "3", f"{folder}/log"], check=False, timeout=30)
            raise RemoteError(
                f"{ex.host.name}: its registry ({did}) does not answer on 127.0.0.1:{port}; "
                f"is the port taken by another program? (then set registry.port) Its log "
                f"ends: {error_summary(log.tail()) or 'empty'}",
                host=ex.host.name, argv=argv, returncode=None,
            )
        time.sleep(0.1)
    password = credentials(ex, cfg, folder)
    ex.run(["docker", "login", "--username", USER, "--password-stdin", f"127.0.0.1:{port}"],
           input=password.reveal() + "\n", timeout=60,
           what="log Docker on the host in to its registry")
    return did


def send(ex: Executor, cfg: Config, folder: str, tag: str, digest: str,
         timeout: float, *, progress: Progress = NULL, key: str = "send") -> CopyStats:
    """Copy tag@digest and its signature from the deployer's registry to the host's,
    through a port forwarded over the SSH connection (`folder`: registry_folder); each
    blob is reported to `progress` under `key`."""
    assert cfg.registry is not None
    password = credentials(ex, cfg, folder)
    host, port = ex.reach("127.0.0.1", cfg.registry.port)
    with RegistryClient.for_config(cfg, deadline=timeout) as src, \
            RegistryClient(f"{host}:{port}", USER, password, deadline=timeout) as dst:
        return copy_image(src, dst, cfg.image, tag, digest, deadline=timeout,
                          progress=progress, key=key)


def verify_there(ex: Executor, cfg: Config, folder: str, tag: str, digest: str) -> None:
    """Verify the signature of tag@digest as the host's registry holds it (the signed
    identity is the configured `image`), and that its tag names that digest."""
    from plainsail.supply.verification import verify_image

    assert cfg.registry is not None
    password = credentials(ex, cfg, folder)
    host, port = ex.reach("127.0.0.1", cfg.registry.port)
    with RegistryClient(f"{host}:{port}", USER, password) as client:
        verify_image(cfg, tag, digest, client=client)
