"""The deployer's own registry for `registry: {mode: host}`.

Debian's `docker-registry` (distribution), bound to 127.0.0.1 on a free port, its data under
`.plainsail/registry/` at the top of the git work tree (beside the build records). It is
started on demand, the first time a command of this process talks to the registry, reused
by every later request of the same process, and stopped when the process exits (on Linux
even when it is killed: the kernel sends the registry SIGTERM when its parent dies), so no
daemon is left behind; the images stay in the data folder for the next command. Docker pushes
to it over plain HTTP because it is on loopback.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from plainsail.config.model import Config
from plainsail.errors import RegistryError

PROGRAM = "docker-registry"
START_TIMEOUT = 15.0
REGISTRY_DIR = Path(".plainsail") / "registry"


def config_text(data_dir: Path | str, port: int, htpasswd: str | None = None) -> str:
    """A distribution 2.x config: filesystem storage, loopback only, deletes allowed; with
    `htpasswd` (a file's path) every request needs a user and password from that file."""
    auth = f"auth:\n  htpasswd:\n    realm: plainsail\n    path: {htpasswd}\n" if htpasswd else ""
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {data_dir}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{auth}"
    )


def registry_dir(cfg: Config) -> Path:
    """`.plainsail/registry/` at the top of the work tree holding plainsail.yml."""
    from plainsail.supply.buildrecords import work_tree_root

    return work_tree_root(cfg.root) / REGISTRY_DIR


@dataclass
class LocalRegistry:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


_running: dict[Path, LocalRegistry] = {}
_lock = threading.Lock()


def address_for(cfg: Config) -> str:
    """127.0.0.1:PORT of this process's registry for cfg's work tree, started if needed."""
    root = registry_dir(cfg).resolve()
    with _lock:
        found = _running.get(root)
        if found is not None and found.proc.poll() is None:
            return found.address
        reg = start(root)
        _running[root] = reg
        return reg.address


def start(root: Path) -> LocalRegistry:
    """Start docker-registry with its data in `root`/data; wait until it answers."""
    program = shutil.which(PROGRAM)
    if program is None:
        raise RegistryError(
            "registry.mode host needs Debian's docker-registry on this machine to hold the "
            "images it builds; install it (apt-get install docker-registry)"
        )
    try:
        (root / "data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(f"cannot create the local registry's folder {root}: "
                            f"{exc.strerror or exc}") from None
    port = _free_port()
    config = root / "config.yml"
    config.write_text(config_text(root / "data", port), encoding="utf-8")
    log = (root / "registry.log").open("ab")
    # Its own session: a Ctrl-C meant for plainsail (which then unwinds) does not stop it.
    proc = subprocess.Popen([program, "serve", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_die_with_parent)  # noqa: PLW1509 - only prctl
    reg = LocalRegistry(root, port, proc, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            reg.stop()
            raise RegistryError(
                f"the local registry (docker-registry, data in {root}) stopped at start "
                f"with exit code {proc.returncode}: {_tail(root / 'registry.log')}"
            )
        if answers(reg.address):
            return reg
        if time.monotonic() > deadline:
            reg.stop()
            raise RegistryError(
                f"the local registry on {reg.address} did not answer within "
                f"{START_TIMEOUT:g}s; see {root / 'registry.log'}"
            )
        time.sleep(0.05)


def answers(address: str, timeout: float = 1.0) -> bool:
    """A distribution registry answers GET /v2/ at `address` (host:port)."""
    try:
        resp = httpx.get(f"http://{address}/v2/", timeout=timeout)
    except httpx.HTTPError:
        return False
    return "docker-distribution-api-version" in resp.headers


def stop_all() -> None:
    """Stop every registry this process started (also run at exit)."""
    with _lock:
        for reg in _running.values():
            reg.stop()
        _running.clear()


atexit.register(stop_all)


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies
    (prctl PR_SET_PDEATHSIG); elsewhere nothing (the atexit hook still stops it)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"
