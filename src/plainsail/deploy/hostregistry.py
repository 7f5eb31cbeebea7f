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
"""

from __future__ import annotations

import time

from plainsail.config.model import Config
from plainsail.errors import RegistryError, RemoteError
from plainsail.hosts.executor import Executor, error_summary
from plainsail.supply.images import ImageRef
from plainsail.supply.localregistry import answers, config_text
from plainsail.supply.registry import RegistryClient
from plainsail.supply.registrycopy import CopyStats, copy_image

LABEL_PORT = "dev.plainsail.registry-port"
START_WAIT = 30.0  # seconds for a started registry to answer
NO_REGISTRY = 3  # exit code of the start script: neither the binary nor registry.image

# Reuse a running registry of ours on this port, else start the binary, else a container.
# Every value arrives as a positional parameter; nothing is formatted into this text.
START_SCRIPT = r"""
dir=$1 port=$2 image=$3 name=$4 service=$5 config=$6
mkdir -p "$dir/data" || exit 1
if [ -s "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
  if [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ]; then
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
state=$(docker container inspect --format "$fmt" "$name" 2>/dev/null)
if [ "$state" = "true $port" ]; then echo "reused container $name"; exit 0; fi
docker rm --force "$name" >/dev/null 2>&1
docker run --detach --name "$name" --restart unless-stopped \
  --label "dev.plainsail.service=$service" --label dev.plainsail.role=registry \
  --label "dev.plainsail.registry-port=$port" --publish "127.0.0.1:$port:5000" \
  --volume "$dir/data:/var/lib/registry" "$image" >/dev/null || exit 1
echo "started container $name"
"""

ALIVE_SCRIPT = 'kill -0 "$(cat "$1/pid")" 2>/dev/null'


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
            container_name(cfg.service), cfg.service, config_text(f"{folder}/data", port)]


def pull_repository(cfg: Config) -> str:
    """The repository hosts pull from: `image` itself, or with registry.mode host the
    same path in the host's loopback registry (127.0.0.1:PORT/<path>)."""
    if not cfg.host_mode:
        return cfg.image
    assert cfg.registry is not None
    return f"127.0.0.1:{cfg.registry.port}/{ImageRef(cfg.image).path}"


def ensure(ex: Executor, cfg: Config, argv: list[str], timeout: float) -> str:
    """Run the start script on the host, then wait until the registry answers through
    the SSH connection; what was done ("started ..." or "reused ...")."""
    assert cfg.registry is not None
    port = cfg.registry.port
    res = ex.run(argv, timeout=timeout, check=False, what="start the host's registry")
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
    while True:
        if answers(address):
            # Something answers; after a start, make sure it is ours: when another program
            # holds the port, the registry just started has exited.
            if not did.startswith("started docker-registry") or ex.run(
                    ["sh", "-c", ALIVE_SCRIPT, "sh", folder], check=False, timeout=30).ok:
                break
            problem = "exited at start"
        elif time.monotonic() > deadline:
            problem = f"does not answer on 127.0.0.1:{port}"
        else:
            time.sleep(0.1)
            continue
        log = ex.run(["tail", "-n", "3", f"{folder}/log"], check=False, timeout=30)
        raise RemoteError(
            f"{ex.host.name}: its registry ({did}) {problem}; is 127.0.0.1:{port} taken by "
            f"another program? (then set registry.port) Its log ends: "
            f"{error_summary(log.tail()) or 'empty'}",
            host=ex.host.name, argv=argv, returncode=None,
        )
    return did


def send(ex: Executor, cfg: Config, tag: str, digest: str, timeout: float) -> CopyStats:
    """Copy tag@digest and its signature from the deployer's registry to the host's,
    through a port forwarded over the SSH connection."""
    assert cfg.registry is not None
    host, port = ex.reach("127.0.0.1", cfg.registry.port)
    with RegistryClient.for_config(cfg, deadline=timeout) as src, \
            RegistryClient(f"{host}:{port}", deadline=timeout) as dst:
        return copy_image(src, dst, cfg.image, tag, digest, deadline=timeout)


def verify_there(ex: Executor, cfg: Config, tag: str, digest: str) -> None:
    """Verify the signature of tag@digest as the host's registry holds it (the signed
    identity is the configured `image`), and that its tag names that digest."""
    from plainsail.supply.verification import verify_image

    assert cfg.registry is not None
    host, port = ex.reach("127.0.0.1", cfg.registry.port)
    with RegistryClient(f"{host}:{port}") as client:
        verify_image(cfg, tag, digest, client=client)
