"""Real services for the tests: registries (plain and with htpasswd auth) started from
Debian's docker-registry package, each on its own free port, stopped at session end."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PORTS = range(29000, 32768)  # below the kernel's usual range for outgoing connections
_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A port free on the machine now, for a test's server or published port, never handed
    out before in this process. Taken from below the range the kernel picks the local ports
    of outgoing connections from: a port picked there (bind to port 0) could become the
    local port of any connection (an SSH session, a registry pull) before the test binds
    it, and a `docker run -p` then fails with "address already in use"."""
    low = _ephemeral_low()
    choices = [p for p in PORTS if p < low and p not in _given]
    random.shuffle(choices)
    for port in choices[:200]:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))  # noqa: S104 - free on every address
            except OSError:
                continue
        _given.add(port)
        return port
    with socket.socket() as s:  # a machine whose outgoing range starts lower
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered (401 for an auth registry)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    root: Path
    username: str | None = None
    password: str | None = None

    def repo(self, name: str) -> str:
        return f"{self.host}/{name}"


def start_registry(username: str | None = None, password: str | None = None) -> tuple[
    Registry, subprocess.Popen[bytes]
]:
    if not shutil.which("docker-registry"):
        pytest.fail("docker-registry is not installed; run scripts/setup.sh")
    root = Path(tempfile.mkdtemp(prefix="psreg-"))
    port = free_port()
    auth = ""
    if username:
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", username, password or ""],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        (root / "htpasswd").write_text(htpasswd + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: plainsail-test\n    path: {root}/htpasswd\n"
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "registry.log", "wb"),  # noqa: SIM115
    )
    wait_http(f"http://127.0.0.1:{port}/v2/")
    return Registry(f"127.0.0.1:{port}", root, username, password), proc


def remove_repo_images(*repos: str) -> None:
    """Every image of these repositories (REGISTRY/NAME, no tag) out of the machine's engine,
    tagged or not: removed by reference, never by id, so an image that also has another
    name (a tagged copy of a shared one) keeps it. A test's or benchmark's clean-up."""
    for repo in repos:
        listed = subprocess.run(
            ["docker", "image", "ls", "--digests", "--format",
             "{{.Repository}} {{.Tag}} {{.Digest}}", repo],
            capture_output=True, text=True, check=False).stdout.split("\n")
        refs = []
        for line in listed:
            if len(line.split()) == 3:
                name, tag, digest = line.split()
                refs += ([f"{name}:{tag}"] if tag != "<none>" else []) + (
                    [f"{name}@{digest}"] if digest != "<none>" else [])
        if refs:
            subprocess.run(["docker", "image", "rm", *dict.fromkeys(refs)],
                           capture_output=True, check=False)


def stop(proc: subprocess.Popen[bytes], root: Path) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain-HTTP registry without auth on a free loopback port."""
    reg, proc = start_registry()
    yield reg
    stop(proc, reg.root)


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[Registry]:
    """A registry that requires basic auth (htpasswd), user `ci`."""
    reg, proc = start_registry("ci", "s3cr3t-" + os.urandom(4).hex())
    yield reg
    stop(proc, reg.root)
