"""Docker commands as data: pure functions that return argv lists, no I/O.

Unit tests compare these lists directly; `plainsail.hosts.executor` executes them locally or on
a host over SSH and logs each one so an operator can replay it by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

LABEL_SERVICE = "dev.plainsail.service"
LABEL_TAG = "dev.plainsail.tag"
LABEL_DIGEST = "dev.plainsail.digest"
LABEL_DEPLOY = "dev.plainsail.deploy-id"
LABEL_ENV = "dev.plainsail.env-fingerprint"
# A salted digest of each setting and variable (plainsail.deploy.settings): what changed.
LABEL_SETTINGS = "dev.plainsail.settings"
LABEL_ROLE = "dev.plainsail.role"


def build(
    context: str,
    dockerfile: str,
    tag: str,
    labels: Mapping[str, str],
    build_args: Mapping[str, str],
) -> list[str]:
    # --force-rm: a failed step leaves no intermediate container behind.
    argv = ["docker", "build", "--force-rm", "--file", dockerfile, "--tag", tag]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    argv.append(context)
    return argv


def push(image: str, config_dir: str | None = None) -> list[str]:
    return [*_docker(config_dir), "push", image]


def tag(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def untag(name: str) -> list[str]:
    """Remove one name of an image (the image stays while another name points at it)."""
    return ["docker", "image", "rm", name]


def login(registry: str, username: str, config_dir: str) -> list[str]:
    """Log in with the password on stdin, into a private config dir (not the user's)."""
    return [*_docker(config_dir), "login", "--username", username, "--password-stdin", registry]


def _docker(config_dir: str | None) -> list[str]:
    return ["docker", "--config", config_dir] if config_dir else ["docker"]


def image_inspect(image: str, fmt: str = "{{json .}}") -> list[str]:
    return ["docker", "image", "inspect", "--format", fmt, image]


def pull(pinned: str) -> list[str]:
    """Pull by digest (`repo@sha256:...`), never by tag."""
    if "@sha256:" not in pinned:
        raise ValueError(f"refusing to pull {pinned!r}: hosts pull by digest only")
    return ["docker", "pull", "--quiet", pinned]


def run_args(
    *,
    name: str,
    image: str,
    env_file: str | None,
    labels: Mapping[str, str],
    network: str | None = None,
    publish: tuple[int, int] | None = None,
    volumes: Sequence[str] = (),
    init: bool = True,
    stop_timeout: float | None = None,
    restart: str | None = None,
    env: Mapping[str, str] | None = None,
    add_hosts: Sequence[str] = (),
    detach: bool = True,
    remove: bool = False,
    command: Sequence[str] = (),
) -> list[str]:
    argv = ["docker", "run"]
    if detach:
        argv.append("--detach")
    if remove:
        argv.append("--rm")
    argv += ["--name", name]
    if init:
        argv.append("--init")
    if restart:
        argv += ["--restart", restart]
    if stop_timeout is not None:
        argv += ["--stop-timeout", str(max(0, round(stop_timeout)))]
    if env_file:
        argv += ["--env-file", env_file]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    if network:
        argv += ["--network", network]
    if publish is not None:
        argv += ["--publish", f"{publish[0]}:{publish[1]}"]
    for entry in add_hosts:
        argv += ["--add-host", entry]
    for volume in volumes:
        argv += ["--volume", volume]
    argv.append(image)
    argv += list(command)
    return argv


def create_args(**kwargs: object) -> list[str]:
    """`docker create` with the same options as `docker run --detach` (for prepared starts)."""
    argv = run_args(**kwargs)  # type: ignore[arg-type]
    argv[1] = "create"
    argv.remove("--detach")
    return argv


def start(name: str) -> list[str]:
    return ["docker", "start", name]


def stop(name: str, timeout: float, *more: str) -> list[str]:
    # -t: the one spelling every client accepts (newer ones warn that --time is deprecated,
    # older ones do not know --timeout).
    return ["docker", "stop", "-t", str(max(0, round(timeout))), name, *more]


def rm(names: Sequence[str], force: bool = False) -> list[str]:
    return ["docker", "rm", *(["--force"] if force else []), *names]


def rmi(images: Sequence[str]) -> list[str]:
    return ["docker", "image", "rm", *images]


def container_ips(name: str) -> list[str]:
    """The container's addresses on its networks, space separated."""
    return ["docker", "inspect", "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name]


def logs(name: str, tail: int) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), "--timestamps", name]


def inspect(names: Sequence[str]) -> list[str]:
    return ["docker", "container", "inspect", *names]


def ps_service(service: str) -> list[str]:
    """Every container of a service (running or not), one JSON object per line."""
    return [
        "docker", "ps", "--all", "--no-trunc",
        "--filter", f"label={LABEL_SERVICE}={service}",
        "--format", "{{json .}}",
    ]


def rename(old: str, new: str) -> list[str]:
    return ["docker", "rename", old, new]
